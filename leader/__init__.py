"""ephemeral-k8s node agent: election on the share, kubeadm driver, join and watch."""

__version__ = "0.1.0"
