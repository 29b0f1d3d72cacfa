"""The lab's stand-in for Warewulf node images (lab only): an image *name* stands for the
Kubernetes version its kubeadm, kubelet (and k3s) carry, as a real ``ek8s-control`` image built
by ``image_builder/build.sh --kubernetes-version V`` does.

On Warewulf a rolling upgrade switches a node to another image (``wwctl node set --image IMAGE
NODE``, 4.5 ``--container``) and reboots it; the lab's ``ek8s lab image NODE IMAGE`` records
the name in ``lab.json`` (:attr:`lab.state.LabNode.image`) and the node's next boot
(:meth:`lab.runners.ProcessRunner.boot`) runs the emulated tools at the version the name
stands for: its own ``emulation-<node>.json`` (``kubernetes_version``) and its node.yaml's
``kubernetes.version``. Names (:func:`image_version`):

* ``ek8s-control``, ``ek8s-base``, ``ek8s-k3s`` (the inventory's defaults, and an empty name):
  the lab's ``--kubernetes-version``;
* ``ek8s-<variant>-v1.M.P``: that release, when :mod:`core.versions` supports its minor;
* anything else: no such image. The node does not boot (a PXE boot of a missing image fails
  before any of our code runs): its agent is not started, and its log says why.

Process mode only: a machine boots the lab's one node image (docs/lab.md).
"""

from __future__ import annotations

import re

from core import versions

VARIANTS = ("control", "base", "k3s")
_NAME_RE = re.compile(r"^ek8s-(control|base|k3s)(?:-(v\d+\.\d+\.\d+))?$")


def image_version(name: str, lab_version: str) -> str | None:
    """The Kubernetes version image ``name`` carries in the lab (module docstring), or None
    when the lab has no such image. ``lab_version`` is the lab's ``--kubernetes-version``."""
    if not name:
        return lab_version
    m = _NAME_RE.match(name)
    if m is None:
        return None
    if m.group(2) is None:
        return lab_version
    try:
        versions.supported(m.group(2))
    except ValueError:
        return None
    return m.group(2)
