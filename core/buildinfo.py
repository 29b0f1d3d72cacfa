"""Which code runs: the package version (``core.__version__``) and the source revision, for
the first log line of every node program and ``ek8s_build_info`` (docs/metrics.md).

The revision is ``git describe --always --dirty`` of the tree the code came from: on a node,
the second word of ``/usr/local/lib/ek8s/VERSION``, which ``ek8s overlay build`` writes beside
the code it copies (``manager/overlay.py``); in a checkout, ``git describe`` itself; else
``unknown``.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import core

_CODE = Path(core.__file__).resolve().parent  # .../core


@functools.cache
def revision() -> str:
    """The source revision (``git describe`` output such as ``a9bff32`` or ``v0.1.0-3-ga9bff32-dirty``),
    or ``unknown``. Read once per process."""
    try:
        words = (_CODE.parents[1] / "VERSION").read_text().split()
        if len(words) >= 2:
            return words[1]
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["git", "-C", str(_CODE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def version() -> str:
    """The package version, ``core.__version__``."""
    return core.__version__
