"""A steady probe of the API behind the VIP, for measuring what an operation costs clients.

``python -m lab.apiprobe --kubeconfig K --configmap NAME --out FILE [--hz 10]`` runs in the
lab's manager namespace (the Warewulf server's stand-in) until SIGTERM: ``--hz`` times a
second it reads ConfigMap ``NAME`` in ``default`` through the VIP (a read that needs etcd's
quorum, official ``kubernetes`` client, 1 s timeout, no retry) and appends one JSON line per
try to ``FILE``: ``{"t": unix s, "ok": bool, "ms": duration, "error": str}``. :func:`summary`
reads such a file: how many tries, how many failed, and the longest gap between two
successful reads (what a client of the cluster waited), with when it began.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.probes import kube_errors

if TYPE_CHECKING:
    from lab.cluster import Lab, LabState


def start(the_lab: Lab, state: LabState, kubeconfig: Path, out: Path) -> subprocess.Popen[bytes]:
    """Create the ConfigMap ``probe`` through the lab's API, then start this probe in the
    manager's namespace (the Warewulf server), appending to ``out``; the caller terminates it.
    Raises ``AssertionError`` when the ConfigMap could not be made."""
    made = the_lab.api("create_namespaced_config_map", "default", {"metadata": {"name": "probe"}, "data": {}})
    assert made is not None and "result" in made, made
    argv = ["ip", "netns", "exec", state.manager, sys.executable, "-m", "lab.apiprobe",
            "--kubeconfig", str(kubeconfig), "--configmap", "probe", "--out", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(path: Path, since: float = 0.0, until: float | None = None) -> dict[str, Any]:
    """``{"tries", "failed", "longest_gap_s", "gap_started_at", "gap_failures"}`` of the probe
    lines in ``path`` with ``since <= t <= until`` (``gap_failures``: ``[seconds into the gap,
    ms, error]`` per failed read in the longest gap). The gap counts from the first try of the window,
    and up to its last one, so a window that ends in failures shows them."""
    tries = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue  # a line being written
        if d["t"] >= since and (until is None or d["t"] <= until):
            tries.append(d)
    if not tries:
        return {"tries": 0, "failed": 0, "longest_gap_s": None, "gap_started_at": None}
    last_ok = tries[0]["t"]
    longest, started = 0.0, None
    for d in tries:
        if d["ok"]:
            if d["t"] - last_ok > longest:
                longest, started = d["t"] - last_ok, last_ok
            last_ok = d["t"]
    if tries[-1]["t"] - last_ok > longest:
        longest, started = tries[-1]["t"] - last_ok, last_ok
    ended = (started or 0.0) + longest
    return {
        "tries": len(tries),
        "failed": sum(1 for d in tries if not d["ok"]),
        "longest_gap_s": round(longest, 3),
        "gap_started_at": started,
        # The failed reads inside the longest gap: seconds into it, how long each took, why.
        "gap_failures": [
            [round(d["t"] - (started or 0.0), 2), round(d.get("ms", 0.0)), str(d.get("error", ""))[:160]]
            for d in tries
            if not d["ok"] and started is not None and started <= d["t"] <= ended
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the probe (module docstring) until SIGTERM or SIGINT; exit 0."""
    p = argparse.ArgumentParser(prog="python -m lab.apiprobe")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--configmap", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hz", type=float, default=10.0)
    args = p.parse_args(argv)
    from kubernetes import client, config

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(args.kubeconfig), client_configuration=configuration)
    configuration.retries = False  # read by the connection pool when the client is made
    api = client.CoreV1Api(client.ApiClient(configuration))
    period = 1.0 / args.hz
    with open(args.out, "a", buffering=1) as out:
        while not stop:
            start = time.time()
            error = ""
            try:
                api.read_namespaced_config_map(args.configmap, "default", _request_timeout=1)
            except kube_errors() as err:
                error = f"{type(err).__name__}: {str(err)[:200]}"
            ms = round((time.time() - start) * 1000, 1)
            out.write(json.dumps({"t": start, "ok": not error, "ms": ms, "error": error}) + "\n")
            time.sleep(max(0.0, period - (time.time() - start)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
