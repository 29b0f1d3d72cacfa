#!/usr/bin/env python3
"""Measure how the lab cluster heals: reboots, a soak of random reboots, VIP failover, HAProxy
reloads under load, a leader crash during init, a full reboot without reset; and, only when
asked for (``--only vipsoak``), spurious VIP takeovers over a loaded 10-minute soak.

Each part boots its own 3 control + 2 worker lab (under /run/ek8s-fbench, namespaces ek8sfb-*)
and tears it down. Figures are printed and written as JSON; docs/benchmarks.md quotes them.

    .venv/bin/python scripts/bench_faults.py                 # everything (~10 minutes)
    .venv/bin/python scripts/bench_faults.py --only reboot vip
    .venv/bin/python scripts/bench_faults.py --only reboot --distribution k3s
    .venv/bin/python scripts/bench_faults.py --only crash2 --data-runs 3   # fenced / ek8s recover
    .venv/bin/python scripts/bench_faults.py --only vipsoak   # 10 min, never by default
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from core.share import MemberRecord, ShareStore
from lab.cluster import Lab, LabState
from lab.emulation import ETCD_DIR_ENV, Emulation, etcd_tool, etcd_version

PROBE = r"""
import http.client, ssl, sys, time, urllib.request
ctx = ssl._create_unverified_context()
end = time.time() + float(sys.argv[1])
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
while time.time() < end:
    t = time.time()
    try:
        with urllib.request.urlopen("https://10.0.0.99:8443/readyz", context=ctx, timeout=timeout) as r:
            ok = r.status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, TLS, a cut-off answer
        ok = False
    print(f"{t:.3f} {int(ok)}", flush=True)
    time.sleep(max(0.0, 0.1 - (time.time() - t)))
"""


DISTRIBUTION = "kubeadm"  # --distribution: every part's lab runs this one


def _stop(proc: subprocess.Popen[str]) -> None:
    """Kill the VIP probe if it still runs (a bench part failed or it overran), and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def fresh_lab(overrides: dict[str, Any] | None = None, emulation: Emulation | None = None, wait: bool = True):  # type: ignore[no-untyped-def]
    """(Lab, LabState) of a new 3 control + 2 worker lab, any earlier one removed, agents
    started; with ``wait``, returned once every node is Ready (180 s) and the cluster whole.
    ``overrides`` are node.yaml fields; ``--distribution`` (:data:`DISTRIBUTION`) picks the
    emulated kubeadm or k3s. Raises :class:`lab.cluster.LabError`."""
    lab = Lab(Path("/run/ek8s-fbench"), "ek8sfb")
    lab.down()
    overrides = dict(overrides or {})
    if DISTRIBUTION != "kubeadm":
        overrides["kubernetes"] = {**overrides.get("kubernetes", {}), "distribution": DISTRIBUTION}
    state = lab.create(3, 2, emulation or Emulation(), overrides)
    lab.start_all(state)
    if wait:
        lab.wait_ready(state, 180, since=state.t0)
        lab.wait_whole(state)
    return lab, state


def med(values: list[float]) -> dict[str, float]:
    """``{median, max, min, n}`` of ``values`` (seconds, rounded to 1 ms)."""
    v = sorted(values)
    return {"median": round(statistics.median(v), 3), "max": round(max(v), 3), "min": round(min(v), 3), "n": len(v)}


def bench_reboot(n: int, join_s: float = 0.0) -> dict[str, Any]:
    """Reboot one node at a time, ``n`` control and ``n`` worker reboots (round robin), each
    waited until the cluster is whole; ``{role: med(rejoin_s) | {join_s}}``."""
    lab, state = fresh_lab(emulation=Emulation(join_s=join_s))
    try:
        out = {}
        for role, names in (("control", ["control0", "control1", "control2"]), ("worker", ["worker0", "worker1"])):
            times = []
            for i in range(n):
                times.append(lab.reboot_nodes(state, [names[i % len(names)]]))
                lab.wait_whole(state)
            out[role] = med(times) | {"join_s": join_s}
            print(f"reboot {role}: rejoin_s {out[role]}", flush=True)
        return out
    finally:
        lab.down()


def bench_soak(n: int) -> dict[str, Any]:
    """``n`` reboots of random nodes (seed 42), the cluster whole after each (else
    :class:`lab.cluster.LabError`); ``{rejoined, of, rejoin_s}``."""
    lab, state = fresh_lab()
    rng = random.Random(42)
    try:
        ok, times = 0, []
        for i in range(n):
            name = rng.choice([node.name for node in state.nodes])
            times.append(lab.reboot_nodes(state, [name]))
            lab.wait_whole(state)  # raises when anything stale is left
            ok += 1
            print(f"soak {i + 1}/{n}: {name} rejoined in {times[-1]:.2f}s, cluster whole", flush=True)
        return {"rejoined": ok, "of": n, "rejoin_s": med(times)}
    finally:
        lab.down()


def probe_gap(state: LabState, seconds: float, action: Any) -> float:
    """Longest time without an answer from the VIP seen by a 10 Hz probe on worker0."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", state.node("worker0").ns, sys.executable, "-c", PROBE, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        action()
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        _stop(proc)
    samples = [(float(t), ok == "1") for t, ok in (line.split() for line in out.splitlines())]
    gap, last_ok = 0.0, None
    for t, ok in samples:
        if ok:
            if last_ok is not None:
                gap = max(gap, t - last_ok)
            last_ok = t
    return gap


def bench_vip(n: int) -> dict[str, Any]:
    """Crash the VIP holder ``n`` times while :func:`probe_gap` watches the API through the
    VIP for 8 s; the crashed node is booted and the cluster made whole again each time.
    ``{gap_s: med(longest gaps)}``."""
    lab, state = fresh_lab()
    try:
        gaps = []
        for _ in range(n):
            holder = lab.report(state)["vip_holder"]
            gaps.append(probe_gap(state, 8.0, lambda h=holder: lab.stop_node(state, state.node(h), crash=True)))
            print(f"VIP failover after crashing {holder}: longest gap {gaps[-1]:.2f}s", flush=True)
            booted = time.time()
            lab.boot_node(state, state.node(holder))
            lab.wait_ready(state, 120, since=booted, names=[holder])
            lab.wait_whole(state)
        return {"gap_s": med(gaps)}
    finally:
        lab.down()


BURN = "while True: pass\n"


def master_transitions(state: LabState) -> dict[str, int]:
    """``{control node: times its keepalived entered MASTER}``, read from its log
    (``<root>/var/log/ek8s/keepalived.log``, keepalived 2.2's "(instance) Entering MASTER
    STATE" line; process mode only: a reboot wipes the root and its log)."""
    out = {}
    for node in state.nodes:
        if node.role == "control":
            log = Path(node.root) / "var/log/ek8s/keepalived.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            out[node.name] = text.count("Entering MASTER STATE")
    return out


def bench_vip_soak(minutes: float, burners: int) -> dict[str, Any]:
    """Spurious VIP takeovers under load: a whole 3 + 2 lab, nothing crashed, for ``minutes``
    while ``burners`` busy loops (normal priority, on the host) keep every core runnable and
    the 10 Hz probe of :func:`probe_gap` loops through the VIP. Counts every keepalived
    transition to MASTER after the start (:func:`master_transitions`) and every change of the
    VIP's holder seen by a 1 Hz poll; both must be 0. ``{minutes, burners, master_transitions,
    holder_changes, holders, probe_failures, probes, longest_gap_s}``."""
    lab, state = fresh_lab()
    procs: list[subprocess.Popen[str]] = []
    # The probe's lines go to a file: 10 minutes of them overfill a pipe nobody reads until
    # the end, which stalls the probe (a first run lost its last 203 s so).
    with tempfile.TemporaryFile(mode="w+") as samples_file:
        try:
            before = master_transitions(state)
            holder = lab.vip_holder(state)
            seconds = minutes * 60
            probe = subprocess.Popen(
                ["ip", "netns", "exec", state.node("worker0").ns, sys.executable, "-c", PROBE, str(seconds)],
                stdout=samples_file,
                text=True,
            )
            procs.append(probe)
            procs += [subprocess.Popen([sys.executable, "-c", BURN], text=True) for _ in range(burners)]
            holders, changes = [holder], 0
            end = time.time() + seconds
            while time.time() < end:
                time.sleep(1.0)
                now = lab.vip_holder(state)
                if now != holders[-1]:
                    changes += 1
                    holders.append(now)
                    print(f"soak: VIP holder changed to {now}", flush=True)
            probe.wait(timeout=60)
            after = master_transitions(state)
        finally:
            for proc in procs:
                _stop(proc)
            lab.down()
        samples_file.seek(0)
        lines = samples_file.read().splitlines()
    samples = [(float(t), ok == "1") for t, ok in (line.split() for line in lines)]
    gap, last_ok = 0.0, None
    for t, ok in samples:
        if ok:
            gap = max(gap, t - last_ok) if last_ok is not None else gap
            last_ok = t
    result = {
        "minutes": minutes,
        "burners": burners,
        "master_transitions": sum(after[n] - before.get(n, 0) for n in after),
        "holder_changes": changes,
        "holders": holders,
        "probe_failures": sum(1 for _, ok in samples if not ok),
        "probes": len(samples),
        "longest_gap_s": round(gap, 3),
    }
    print(f"VIP soak: {result}", flush=True)
    return result


def bench_reload_under_load(changes: int) -> dict[str, Any]:
    """A client on worker0 loops through the VIP while ``changes`` membership changes (a member
    record appears or disappears, every Phylactery is told to refresh) are applied."""
    lab, state = fresh_lab()
    token = (Path(state.share) / "default/phylactery.token").read_text().strip()
    controls = [n for n in state.nodes if n.role == "control"]
    try:
        before = sum(lab.probe(state)["phylactery"][c.name]["haproxy"]["reloads"] for c in controls)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", state.node("worker0").ns, sys.executable, "-c", PROBE, str(changes * 0.5 + 3), "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1.0)
            store = ShareStore(Path(state.share), "default", "bench")
            for i in range(changes):
                if i % 2 == 0:
                    store.register_member(MemberRecord("ghost", "10.0.0.60", "https://10.0.0.60:9999", "x", 1))
                else:
                    store.remove_member("ghost")
                ca = Path(state.share) / "default/phylactery-ca.crt"  # Phylactery speaks TLS only
                curls = " & ".join(
                    f"curl -s -o /dev/null --cacert {ca} -X POST -H 'Authorization: Bearer {token}' "
                    f"https://{c.address}:9999/v1/refresh"
                    for c in controls
                )
                subprocess.run(
                    ["ip", "netns", "exec", state.node("worker1").ns, "sh", "-c", curls + "; wait"],
                    check=True,
                    timeout=30,
                )
                time.sleep(0.5)
            out, _ = proc.communicate(timeout=60)
        finally:
            _stop(proc)
        results = [line.split()[1] == "1" for line in out.splitlines()]
        after = sum(lab.probe(state)["phylactery"][c.name]["haproxy"]["reloads"] for c in controls)
        r = {"requests": len(results), "failed": results.count(False), "reloads": after - before, "changes": changes}
        print(f"reload under load: {r}", flush=True)
        return r
    finally:
        lab.down()


def bench_leader_crash(ttl: float, init_s: float) -> dict[str, Any]:
    """Crash the first leader during its ``kubeadm init`` (``init_s`` seconds, lease TTL
    ``ttl`` seconds) and time the first ``leader_ready`` after it; ``bound_s`` is
    ``ttl + init_s + 3``. Waits for the leader and for ``leader_ready`` without a deadline."""
    lab, state = fresh_lab(
        {"timeouts": {"lease_ttl_s": ttl, "heartbeat_interval_s": 1}}, Emulation(init_s=init_s), wait=False
    )
    store = ShareStore(Path(state.share), "default", "bench")
    try:
        while True:
            try:
                leader = store.read_state().leader
            except FileNotFoundError:
                leader = None
            if leader:
                break
            time.sleep(0.05)
        crashed = time.time()
        lab.stop_node(state, state.node(leader.node), crash=True)
        survivors = [n.name for n in state.nodes if n.name != leader.node]
        ready = [e for e in store.events() if e["event"] == "leader_ready"]
        while not ready:
            time.sleep(0.1)
            ready = [e for e in store.events() if e["event"] == "leader_ready"]
        lab.wait_ready(state, 180, since=state.t0, names=survivors)
        r = {
            "lease_ttl_s": ttl,
            "init_s": init_s,
            "ready_after_crash_s": round(ready[0]["t"] - crashed, 3),
            "bound_s": ttl + init_s + 3,
        }
        print(f"leader crash during init: {r}", flush=True)
        return r
    finally:
        lab.down()


def bench_full_reboot(grace: float) -> dict[str, Any]:
    """Stop and boot every node at once without ``ek8s reset`` (``cluster_lost_grace_s`` is
    ``grace`` seconds) and time the new generation: ready and all nodes Ready (seconds from
    boot), init (claim to ready). Waits for the new generation without a deadline."""
    lab, state = fresh_lab({"timeouts": {"cluster_lost_grace_s": grace}})
    store = ShareStore(Path(state.share), "default", "bench")
    try:
        generation = store.read_state().generation
        for n in state.nodes:
            lab.stop_node(state, n, crash=False)
        booted = time.time()
        for n in state.nodes:
            lab.boot_node(state, n)
        while True:
            s = store.read_state()
            if s.generation > generation and s.ready:
                break
            time.sleep(0.1)
        ready_events = [e for e in store.events() if e["event"] == "leader_ready" and e["generation"] > generation]
        claim = [e for e in store.events() if e["event"] == "leader_claimed" and e["generation"] > generation]
        all_ready = lab.wait_ready(state, 180, since=booted)
        r = {
            "grace_s": grace,
            "new_generation_ready_s": round(ready_events[0]["t"] - booted, 3),
            "init_s": round(ready_events[0]["t"] - claim[0]["t"], 3),
            "all_nodes_ready_s": round(all_ready - booted, 3),
        }
        print(f"full reboot without reset: {r}", flush=True)
        return r
    finally:
        lab.down()


CONFIGMAPS_PY = r"""
import json, sys, time
from kubernetes import client, config
api = client.CoreV1Api(config.new_client_from_config(config_file=sys.argv[1]))
if sys.argv[2] == "create":
    for name in sys.argv[3:]:
        api.create_namespaced_config_map(
            "default", {"metadata": {"name": name}, "data": {"created": str(time.time())}}
        )
print(json.dumps({i.metadata.name: float(i.data["created"]) for i in api.list_namespaced_config_map("default").items
                  if i.data and "created" in i.data}))
"""


def configmaps(state: LabState, verb: str, *names: str) -> dict[str, float]:
    """Create ConfigMaps ``names`` (``create``) through the API behind the VIP, from worker0;
    returns every bench ConfigMap with its creation time (Unix seconds)."""
    kubeconfig = str(Path(state.share) / "default/kube.config")
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            state.node("worker0").ns,
            sys.executable,
            "-c",
            CONFIGMAPS_PY,
            kubeconfig,
            verb,
            *names,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise RuntimeError(f"configmaps {verb}: {res.stderr[-1000:]}")
    return {k: float(v) for k, v in json.loads(res.stdout).items()}


def first_event(store: ShareStore, name: str, since: float, timeout_s: float = 180) -> float:
    """The time (Unix s) of the first ``name`` event after ``since``; RuntimeError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ts = [e["t"] for e in store.events() if e["event"] == name and e["t"] >= since]
        if ts:
            return min(ts)
        time.sleep(0.1)
    raise RuntimeError(f"no {name} event within {timeout_s:.0f}s")


def bench_quorum_reboot(n: int) -> dict[str, Any]:
    """Reboot 2 of 3 control nodes at once, ``n`` times: seconds from the reboot to the API
    answering again (the survivor's ``etcd_reformed``) and to both Ready; objects kept."""
    lab, state = fresh_lab()
    store = ShareStore(Path(state.share), "default", "bench")
    try:
        api_s, ready_s, kept = [], [], 0
        for i in range(n):
            configmaps(state, "create", f"quorum-{i}")
            booted = time.time()
            ready_s.append(lab.reboot_nodes(state, ["control1", "control2"]))
            api_s.append(first_event(store, "etcd_reformed", booted) - booted)
            lab.wait_whole(state)
            kept += all(f"quorum-{j}" in configmaps(state, "read") for j in range(i + 1))
            print(
                f"quorum reboot {i + 1}/{n}: API {api_s[-1]:.2f}s, Ready {ready_s[-1]:.2f}s, "
                f"objects kept in {kept}/{i + 1} runs",
                flush=True,
            )
        return {
            "api_answers_s": med(api_s),
            "all_ready_s": med(ready_s),
            "objects_kept_runs": kept,
            "of": n,
            "samples": {"api_answers_s": api_s, "all_ready_s": ready_s},
        }
    finally:
        lab.down()


def crash_two(lab: Lab, state: LabState, tag: str) -> float:
    """Create the ConfigMap ``tag``, then crash control1 and control2 (they stay down); returns
    the crash time (Unix seconds)."""
    configmaps(state, "create", tag)
    crashed = time.time()
    for n in ("control1", "control2"):
        lab.stop_node(state, state.node(n), crash=True)
    return crashed


def api_again(state: LabState, tags: list[str], since: float, timeout_s: float = 180) -> float:
    """Seconds from ``since`` until every ConfigMap of ``tags`` reads back through the VIP."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if set(tags) <= set(configmaps(state, "read")):
                return time.time() - since
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API did not answer with {tags} within {timeout_s:.0f}s")


def bench_crash_for_good(n: int, lease_s: float) -> dict[str, Any]:
    """2 of 3 control nodes crash and stay down (issue 19: silence is not proof), ``n`` times
    each way, on one lab with ``timeouts.lease_ttl_s`` = ``lease_s``:

    * ``fenced``: ``fencing: warewulf-power`` and ``ek8s fence serve`` on the Warewulf server
      (the manager namespace) with a ``wwctl power cycle`` stand-in (``ek8s lab crash`` then
      ``ek8s lab boot``): seconds from the crash to the survivor's ``etcd_reformed`` and to the
      API answering with every object;
    * ``accepted``: no fence service; the survivor's ``recovery_waiting`` (what ``ek8s status``
      shows meanwhile), then the operator's ``ek8s recover --accept-loss-of control1,control2``
      as soon as it is accepted (past the lease): seconds from the crash to each, and from the
      acceptance to the API answering.
    The two crashed nodes boot again after each run (the fence already booted them)."""
    lab, state = fresh_lab({"fencing": "warewulf-power", "timeouts": {"lease_ttl_s": lease_s}})
    store = ShareStore(Path(state.share), "default", "bench")
    share = str(Path(state.share))
    cmd = f"{sys.executable} -m manager lab --dir {lab.dir} --prefix {lab.prefix}"
    power = lab.dir / "wwctl-power-standin"
    host = f"nsenter --mount=/proc/{os.getpid()}/ns/mnt --net=/proc/{os.getpid()}/ns/net --"  # a BMC: out of band
    power.write_text(f'#!/bin/sh\n{host} {cmd} crash "$1" >/dev/null 2>&1\nexec {host} {cmd} boot "$1"\n')
    power.chmod(0o755)
    out: dict[str, dict[str, list[float]]] = {"fenced": {}, "accepted": {}}
    tags: list[str] = []
    try:
        for i in range(2 * n):
            way = "fenced" if i % 2 == 0 else "accepted"  # alternate, one lab
            tag = f"crash2-{i}"
            tags.append(tag)
            crashed = crash_two(lab, state, tag)
            fence = None
            if way == "fenced":
                fence = subprocess.Popen(
                    ["ip", "netns", "exec", state.manager, sys.executable, "-m", "manager", "fence", "serve",
                     "--share", share, "--lease-ttl", str(lease_s), "--interval", "0.5",
                     "--power-command", f"{power} {{node}}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            try:
                row = out[way]
                if way == "accepted":
                    row.setdefault("recovery_waiting_s", []).append(
                        first_event(store, "recovery_waiting", crashed) - crashed
                    )
                    argv = [sys.executable, "-m", "manager", "recover", "--share", share, "--accept-loss-of",
                            "control1,control2", "--yes", "--lease-ttl", str(lease_s)]  # fmt: skip
                    while subprocess.run(argv, capture_output=True, timeout=60).returncode != 0:
                        time.sleep(0.5)
                    accepted = time.time()
                    row.setdefault("accepted_s", []).append(accepted - crashed)
                row.setdefault("reformed_s", []).append(first_event(store, "etcd_reformed", crashed) - crashed)
                row.setdefault("api_s", []).append(api_again(state, tags, crashed))
                if way == "accepted":
                    row.setdefault("api_after_acceptance_s", []).append(row["api_s"][-1] - row["accepted_s"][-1])
            finally:
                if fence is not None:
                    fence.terminate()
                    fence.wait(timeout=30)
            state = lab.load()
            for name in ("control1", "control2"):
                if not state.node(name).pid or not psutil.pid_exists(state.node(name).pid):
                    lab.boot_node(state, state.node(name))
            lab.wait_ready(lab.load(), 180, since=crashed, names=["control1", "control2"])
            state = lab.load()
            lab.wait_whole(state)
            print(f"crash for good {i + 1}/{2 * n} ({way}): " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in row.items()),
                  flush=True)  # fmt: skip
        return {"lease_ttl_s": lease_s} | {
            way: {k: med(v) for k, v in rows.items()} | {"samples": rows} for way, rows in out.items()
        }
    finally:
        lab.down()


def bench_full_restore(n: int, interval_s: float) -> dict[str, Any]:
    """Reboot every node at once, ``n`` times, right after ConfigMaps were created one after another:
    seconds to every node Ready, and the RPO (reboot time minus the creation time of the
    newest object that survived), with snapshots every ``interval_s`` seconds."""
    lab, state = fresh_lab({"phylactery": {"snapshot_interval_s": interval_s}})
    try:
        ready_s, rpo_s = [], []
        for i in range(n):
            for k in range(int(interval_s * 1.5)):  # each call takes about a second (a new process)
                configmaps(state, "create", f"full-{i}-{k}")
            rebooted = time.time()
            ready_s.append(lab.reboot_nodes(state, [node.name for node in state.nodes], timeout_s=300))
            lab.wait_whole(state)
            created = configmaps(state, "read")
            rpo_s.append(rebooted - max(created.values()))
            print(f"full reboot {i + 1}/{n}: Ready {ready_s[-1]:.2f}s, RPO {rpo_s[-1]:.2f}s", flush=True)
        return {
            "all_ready_s": med(ready_s),
            "rpo_s": med(rpo_s),
            "snapshot_interval_s": interval_s,
            "samples": {"all_ready_s": ready_s, "rpo_s": rpo_s},
        }
    finally:
        lab.down()


def remove_member(state: LabState, via: str, node: str, timeout_s: float = 60) -> None:
    """``etcdctl member remove`` (the lab's etcdctl, gRPC) of ``node``'s member from ``via``'s
    member, with the client pair ``via``'s distribution made; etcd's strict reconfiguration
    check refuses ("unhealthy cluster") within 5 s of a join: retried. Raises RuntimeError."""
    root = Path(state.node(via).root)
    if DISTRIBUTION == "k3s":
        tls = root / "var/lib/rancher/k3s/server/tls/etcd"
        certs = [f"--cacert={tls / 'server-ca.crt'}", f"--cert={tls / 'client.crt'}", f"--key={tls / 'client.key'}"]
    else:
        pki = root / "etc/kubernetes/pki/etcd"
        certs = [f"--cacert={pki / 'ca.crt'}", f"--cert={pki / 'healthcheck-client.crt'}"]
        certs.append(f"--key={pki / 'healthcheck-client.key'}")
    base = ["ip", "netns", "exec", state.node(via).ns, etcd_tool("etcdctl"), *certs]
    base.append(f"--endpoints=https://{state.node(via).address}:2379")
    deadline = time.monotonic() + timeout_s
    while True:
        listed = subprocess.run([*base, "-w", "json", "member", "list"], capture_output=True, text=True, timeout=30)
        members = json.loads(listed.stdout)["members"]
        # kubeadm names members as their node, k3s "<node>-<8 hex digits>"
        victim = next(m for m in members if node in (m.get("name"), m.get("name", "").rsplit("-", 1)[0]))
        res = subprocess.run(
            [*base, "member", "remove", f"{victim['ID']:x}"], capture_output=True, text=True, timeout=30
        )
        if res.returncode == 0:
            return
        if "unhealthy cluster" not in res.stderr or time.monotonic() > deadline:
            raise RuntimeError(f"etcdctl member remove: {res.stderr[-500:]}")
        time.sleep(0.5)


def bench_removed_member(n: int) -> dict[str, Any]:
    """Remove control1's etcd member behind its back (``etcdctl member remove`` from control0),
    ``n`` times: seconds until control1 notices (``member_removed``) and is Ready again."""
    lab, state = fresh_lab()
    store = ShareStore(Path(state.share), "default", "bench")
    try:
        notice_s, heal_s = [], []
        for i in range(n):
            removed = time.time()
            remove_member(state, "control0", "control1")
            notice_s.append(first_event(store, "member_removed", removed) - removed)
            heal_s.append(lab.wait_ready(state, 180, since=removed, names=["control1"]) - removed)
            lab.wait_whole(state)
            print(f"removed member {i + 1}/{n}: noticed {notice_s[-1]:.2f}s, Ready {heal_s[-1]:.2f}s", flush=True)
        return {
            "noticed_s": med(notice_s),
            "ready_again_s": med(heal_s),
            "samples": {"noticed_s": notice_s, "ready_again_s": heal_s},
        }
    finally:
        lab.down()


def alternate_etcds(etcds: list[str], parts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The data parts (``quorum``, ``restore``, ``removed``) one run at a time on each etcd of
    ``etcds`` (directories with etcd, etcdctl, etcdutl: ``$EK8S_ETCD_DIR``) in turn,
    ``--data-runs`` rounds, so load on the shared cores hits each alike. Returns
    ``{"etcd X.Y.Z": {part: {measure: med(...), "samples": {...}}}}``."""
    import os

    runs = {
        "quorum": (lambda: bench_quorum_reboot(1), "two_of_three_control_rebooted"),
        "restore": (lambda: bench_full_restore(1, 10.0), "every_node_rebooted_restore"),
        "removed": (lambda: bench_removed_member(1), "member_removed_behind_its_back"),
    }
    labels = {}
    for directory in etcds:
        os.environ[ETCD_DIR_ENV] = directory
        labels[directory] = "etcd " + ".".join(map(str, etcd_version(etcd_tool("etcd"))))
    samples: dict[str, dict[str, dict[str, list[float]]]] = {labels[e]: {} for e in etcds}
    for i in range(args.data_runs):
        for part in parts:
            bench, key = runs[part]
            for directory in etcds:
                os.environ[ETCD_DIR_ENV] = directory
                print(f"round {i + 1}/{args.data_runs} {part} on {labels[directory]}", flush=True)
                got = bench()["samples"]
                into = samples[labels[directory]].setdefault(key, {})
                for measure, values in got.items():
                    into.setdefault(measure, []).extend(values)
    return {
        label: {key: {**{m: med(v) for m, v in ms.items()}, "samples": ms} for key, ms in parts_.items()}
        for label, parts_ in samples.items()
    }


def main() -> int:
    """Run the parts chosen with ``--only`` (all by default), print the results and write them
    to ``--json``; returns 0. Needs root, as ``ek8s lab``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["reboot", "soak", "vip", "reload", "leader", "full", "quorum", "crash2", "restore", "removed"]
    # vipsoak runs 10 minutes: only when asked for by name.
    p.add_argument("--only", nargs="*", choices=[*parts, "vipsoak"], default=parts)
    p.add_argument("--reboots", type=int, default=10)
    p.add_argument("--soak", type=int, default=20)
    p.add_argument("--data-runs", type=int, default=3, help="runs of the quorum, restore and removed parts")
    p.add_argument("--soak-minutes", type=float, default=10.0, help="length of the vipsoak part")
    p.add_argument("--burners", type=int, default=2 * (os.cpu_count() or 1), help="busy loops during vipsoak")
    p.add_argument("--join-seconds", type=float, default=0.0, help="emulated kubeadm join duration for the reboots")
    p.add_argument("--distribution", choices=["kubeadm", "k3s"], default="kubeadm")
    p.add_argument(
        "--etcd",
        action="append",
        default=[],
        help="a directory with etcd, etcdctl, etcdutl (repeatable: the quorum, restore and removed parts take turns)",
    )
    p.add_argument("--lease-ttl", type=float, default=30.0, help="timeouts.lease_ttl_s of the crash2 part's lab")
    p.add_argument("--json", type=Path, default=Path("bench-faults.json"))
    args = p.parse_args()
    global DISTRIBUTION
    DISTRIBUTION = args.distribution
    results: dict[str, Any] = {}
    if args.etcd:
        results = alternate_etcds(args.etcd, [x for x in args.only if x in ("quorum", "restore", "removed")], args)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: {p: {m: v for m, v in r.items() if m != "samples"} for p, r in parts_.items()}
                          for k, parts_ in results.items()}, indent=1))  # fmt: skip
        return 0
    if "reboot" in args.only:
        results["reboot"] = bench_reboot(args.reboots, args.join_seconds)
    if "soak" in args.only:
        results["soak"] = bench_soak(args.soak)
    if "vip" in args.only:
        results["vip_failover"] = bench_vip(5)
    if "vipsoak" in args.only:
        results["vip_soak"] = bench_vip_soak(args.soak_minutes, args.burners)
    if "reload" in args.only:
        results["reload_under_load"] = bench_reload_under_load(20)
    if "leader" in args.only:
        results["leader_crash_during_init"] = bench_leader_crash(10.0, 5.0)
    if "quorum" in args.only:
        results["two_of_three_control_rebooted"] = bench_quorum_reboot(args.data_runs)
    if "crash2" in args.only:
        results["two_of_three_control_crashed_for_good"] = bench_crash_for_good(args.data_runs, args.lease_ttl)
    if "restore" in args.only:
        results["every_node_rebooted_restore"] = bench_full_restore(args.data_runs, 10.0)
    if "removed" in args.only:
        results["member_removed_behind_its_back"] = bench_removed_member(args.data_runs)
    if "full" in args.only:
        results["full_reboot_without_reset"] = bench_full_reboot(10.0)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
