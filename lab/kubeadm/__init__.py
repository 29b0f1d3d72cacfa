"""EMULATED kubeadm for the lab, as kubeadm's own workflow: an ordered list of phases per
command (:mod:`lab.kubeadm.workflow`, after ``cmd/kubeadm/app/cmd/phases/workflow``), with the
phases, waits, refusals and messages of the kubeadm version the lab runs (1.32 to 1.36,
:mod:`core.versions`) where the project depends on them.

One module per job: :mod:`~lab.kubeadm.cli` (the command line the driver calls),
:mod:`~lab.kubeadm.init`, :mod:`~lab.kubeadm.join` and :mod:`~lab.kubeadm.reset` (each
command's phase list), :mod:`~lab.kubeadm.preflight` (the checks),
:mod:`~lab.kubeadm.etcd` (kubeadm's etcd client and its phases),
:mod:`~lab.kubeadm.certs` (certificates, tokens, ``kubeadm-certs``),
:mod:`~lab.kubeadm.controlplane` (static Pod manifests, the kubelet),
:mod:`~lab.kubeadm.config` (the ``--config`` documents). Paths in docstrings are under
``cmd/kubeadm/app/`` in kubernetes/kubernetes; docs/lab.md says what is emulated and how it
differs. Nothing here is imported at package import: ``python -m lab.kubeadm`` starts fast.
"""
