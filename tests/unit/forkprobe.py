"""A tool for the fork server's unit tests (``--entry probe=tests.unit.forkprobe:main``):
``report`` prints what the process got as JSON, ``sleep`` prints its pid and sleeps, ``exit N``
returns N, ``raise`` raises, ``message`` exits with a string."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    what = sys.argv[1:]
    if what[:1] == ["report"]:
        umask = os.umask(0)
        os.umask(umask)
        print("to stderr", file=sys.stderr)
        print(
            json.dumps(
                {
                    "argv": sys.argv,
                    "cwd": os.getcwd(),
                    "umask": umask,
                    "env": os.environ.get("FORKPROBE"),
                    "pid": os.getpid(),
                    "session": os.getsid(0),
                    "comm": Path("/proc/self/comm").read_text().strip(),
                }
            )
        )
        return 0
    if what[:1] == ["sleep"]:
        print(os.getpid(), flush=True)
        time.sleep(60)
        return 0
    if what[:1] == ["exit"]:
        return int(what[1])
    if what[:1] == ["raise"]:
        raise RuntimeError("the probe raised")
    if what[:1] == ["message"]:
        sys.exit("the probe's message")
    return 64
