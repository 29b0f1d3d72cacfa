"""The shared base of every ephemeral-k8s program: node.yaml's model, the share store, file
modes, logs, service managers, the etcd client, HTTP probes and the Kubernetes drivers.

It imports nothing of the programs above it (``leader``, ``phylactery``, ``manager``,
``lab``); see docs/architecture.md for the layers.
"""

__version__ = "0.1.0"
