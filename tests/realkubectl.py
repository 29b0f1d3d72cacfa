"""Debian's real ``kubectl`` for the tests that drive it (``make kubectl`` installs it, see the
Makefile): ``$EK8S_KUBECTL_DIR/<minor>/usr/bin/kubectl`` (default ``/opt/ek8s/kubectl``),
1.32 from trixie and 1.36 from sid. A ``kubectl`` on the host's PATH is never used: it may be
another vendor's build of another version.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

MINORS = ("1.32", "1.36")


def path(minor: str) -> Path:
    """The real kubectl of ``minor``; fails the test (not skips: a tier that skips proves
    nothing) with the command that installs it when it is missing."""
    p = Path(os.environ.get("EK8S_KUBECTL_DIR", "/opt/ek8s/kubectl")) / minor / "usr/bin/kubectl"
    if not os.access(p, os.X_OK):
        pytest.fail(f"no kubectl {minor} at {p}: run 'make kubectl'", pytrace=False)
    return p


def run(
    minor: str, kubeconfig: Path, cache: Path, *args: str, prefix: tuple[str, ...] = (), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``kubectl ARGS`` of ``minor`` with ``kubeconfig``, its discovery cache under ``cache``
    (never the user's ``~/.kube``), run after ``prefix`` (e.g. ``ip netns exec NS``); text
    output captured."""
    argv = [*prefix, str(path(minor)), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", *args]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(cache), "LANG": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
