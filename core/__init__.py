"""The shared base of every ephemeral-k8s program: node.yaml's model, the share store, file
modes, logs, service managers, the etcd client, HTTP probes and the Kubernetes drivers.

It imports nothing of the programs above it (``leader``, ``phylactery``, ``manager``,
``lab``); see docs/architecture.md for the layers.

:data:`__version__` is the project's one version source: ``pyproject.toml`` reads it
(``[tool.setuptools.dynamic]``), every program's ``--version`` prints it with
:func:`version_string`, and ``ek8s_build_info`` takes :func:`revision` beside it.
"""

from __future__ import annotations

import functools
from pathlib import Path

__version__ = "0.1.0"

# ``git describe --always --dirty`` of the tree this copy of the code came from, recorded
# beside the package: by the wheel build (setup.py) and by ``ek8s overlay build`` in the
# overlay's copy (manager/overlay.py), where no git repository travels along.
REVISION_FILE = "REVISION"
UNKNOWN = "unknown"


@functools.lru_cache(maxsize=1)
def revision() -> str:
    """Which tree this code was built from: ``git describe --always --dirty`` output
    (``a9bff32``, ``v0.1.0-3-ga9bff32-dirty``), or ``"unknown"``.

    Read, in this order, from ``core/REVISION`` (written by the wheel build and by
    ``ek8s overlay build`` into the copy a node runs), then from ``git describe`` when this
    package sits in a git checkout (an editable install, the lab), else ``"unknown"``. Never
    raises; git gets 5 s. Cached for the life of the process."""
    return read_revision(Path(__file__).resolve().parent)


def read_revision(here: Path) -> str:
    """:func:`revision` for a ``core`` package directory ``here`` (uncached)."""
    try:
        recorded = (here / REVISION_FILE).read_text().strip()
    except OSError:
        recorded = ""
    if recorded:
        return recorded
    checkout = here.parent
    if not (checkout / ".git").exists():
        return UNKNOWN
    import subprocess  # only for a checkout: a node's agent reaches its share without it

    try:
        res = subprocess.run(
            ["git", "-C", str(checkout), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else UNKNOWN


def version_string() -> str:
    """``"<version> (<revision>)"``, e.g. ``"0.1.0 (a9bff32-dirty)"``: what ``--version``
    prints after the program's name and what a program's first log line carries."""
    return f"{__version__} ({revision()})"
