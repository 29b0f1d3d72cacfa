"""The local lab: nodes as network namespaces, real etcd/HAProxy/keepalived, EMULATED kubeadm,
kube-apiserver and kubelet (no Kubernetes binaries can be installed where it runs)."""
