"""The node agent: boot -> elect -> init | join -> watch (DESIGN §2, §4).

Like Patroni's HA cycle, each pass of :meth:`Agent.run` reads one snapshot of the share,
decides, acts, and says in one sentence what it did and why; the sentences go to the log and,
for milestones, to ``events.jsonl`` (the lab's timeline is made of them).

Milestone events: ``boot``, ``leader_claimed``, ``phylactery_up``, ``api_ready``,
``leader_ready``, ``join_started``, ``joined``, ``join_failed``, ``node_ready``, ``deposed``,
``generation_changed``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leader import probes
from leader.config import NodeConfig
from leader.drivers import DriverError, driver_for
from leader.drivers.kubeadm import CERTIFICATE_KEY_TTL_S, TOKEN_TTL_S
from leader.election import boot_id, rule_for
from leader.joinmaterial import ca_cert_hash, generate_certificate_key, generate_token
from leader.logs import get_logger
from leader.services import service_manager
from leader.share import EpochSuperseded, Heartbeat, JoinMaterial, ShareStore

log = get_logger("ek8s.agent", "agent")


class JoinFailed(Exception):
    """Every join attempt failed; the message has the last reason."""


class GenerationChanged(Exception):
    """The generation this node works on was replaced; run the election again."""


class Agent:
    """One node's agent. ``config_path`` is passed on to Phylactery."""

    def __init__(self, cfg: NodeConfig, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.store = ShareStore(cfg.share.path, cfg.cluster, cfg.node.name)
        self.driver = driver_for(cfg)
        self.services = service_manager(cfg.service_manager, cfg.root)
        self.boot_id = boot_id(cfg.root)
        self.phase = "boot"
        self.generation = 0
        self.previous: Heartbeat | None = None
        self._stop = threading.Event()
        self._phylactery_started = False
        self._phylactery_up = False
        self._silent_since: float | None = None
        self._lost_reported = False
        self._host_prepared = threading.Event()

    # -- small helpers ------------------------------------------------------------------
    def say(self, phase: str, message: str, event: str | None = None, **fields: object) -> None:
        """Log one decision; with ``event``, also append it to the share's timeline."""
        self.phase = phase
        log.info(message, extra={"phase": phase, **fields})
        if event:
            self.store.record_event(event, self.generation, message, role=self.cfg.role, **fields)

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.heartbeat(self.boot_id, self.cfg.role, self.phase, self.generation)
            except OSError as err:
                log.warning("heartbeat failed", extra={"phase": "heartbeat", "error": str(err)})
            self._stop.wait(self.cfg.timeouts.heartbeat_interval_s)

    def _wait(self, what: str, check: Callable[[], bool], timeout_s: float, interval_s: float | None = None) -> None:
        """Poll ``check`` every ``interval_s`` (default ``timeouts.poll_interval_s``) until it
        returns True; log progress every 10 s; raise ``TimeoutError`` after ``timeout_s``."""
        interval = interval_s or self.cfg.timeouts.poll_interval_s
        start = time.monotonic()
        next_note = start + 10
        while not check():
            now = time.monotonic()
            if now - start > timeout_s:
                raise TimeoutError(f"{what}: not done after {timeout_s:.0f}s")
            if now > next_note:
                log.info(f"still waiting: {what}", extra={"phase": self.phase, "waited_s": round(now - start, 1)})
                next_note = now + 10
            time.sleep(interval)

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the process exit code (1 when joining gave up)."""
        self.store.ensure()
        self.previous = self.store.read_heartbeat(self.cfg.node.name)
        self.say(
            "boot",
            f"booting as {self.cfg.role} node {self.cfg.node.name} ({self.cfg.node.address})",
            "boot",
            boot_id=self.boot_id,
        )
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.prepare_host, name="prepare-host", daemon=True).start()
        threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
        if self.cfg.is_control:
            # Phylactery registers this node and brings up HAProxy and keepalived while the
            # election and kubeadm run; kubeadm reaches the VIP only once its API is up.
            self.start_phylactery(wait=False)
        init_failures = 0
        rule = rule_for(self.cfg.role, self.cfg.node.name, self.boot_id, self.cfg.timeouts.lease_ttl_s)
        try:
            while True:
                state, action, why = self.store.attempt_leadership(self.cfg.node.address, self.boot_id, rule)
                if state.generation != self.generation and self.generation and self._phylactery_started:
                    self.refresh_phylactery()
                self.generation = state.generation
                if action == "lead":
                    self.say(
                        "election",
                        f"I lead generation {state.generation} with epoch {state.epoch}: {why}",
                        "leader_claimed",
                        epoch=state.epoch,
                    )
                    try:
                        self.lead(state.epoch, Path(state.restore_from) if state.restore_from else None)
                    except EpochSuperseded as err:
                        self.say("election", f"deposed ({err}); resetting and following the new leader", "deposed")
                        self.driver.reset()
                        continue
                    except (DriverError, TimeoutError) as err:
                        init_failures += 1
                        self.say("init", f"init failed ({init_failures}x): {err}", "init_failed")
                        self.driver.reset()
                        if init_failures >= self.cfg.timeouts.join_attempts:
                            raise JoinFailed(f"kubeadm init failed {init_failures} times: {err}") from err
                        time.sleep(self.cfg.timeouts.join_backoff_s * init_failures)
                        continue
                elif action == "follow":
                    self.say("election", f"following: {why}")
                    self.follow()
                    continue
                else:
                    self.say("election", f"joining: {why}")
                    try:
                        self.join()
                    except GenerationChanged as err:
                        self.say("election", f"{err}; running the election again")
                        continue
                if not self.watch():
                    continue
                return 0
        except JoinFailed as err:
            self.say("join", f"giving up: {err}", "join_failed")
            return 1
        finally:
            self._stop.set()

    def prepare_host(self) -> None:
        """Kernel settings Kubernetes needs and the baked image archives imported, beside the
        election (a real node only; the lab's nodes share a kernel and pull nothing)."""
        try:
            if self.cfg.root == Path("/"):
                self._prepare_kernel()
                self._import_images()
        finally:
            self._host_prepared.set()

    def _import_images(self) -> None:
        from leader.images import archives, import_archives

        directory = self.cfg.kubernetes.image_archives
        if not archives(directory):
            return
        result = import_archives(directory, workers=4, timeout_s=self.cfg.timeouts.command_s)
        self.say(
            "prepare",
            f"imported {len(result.imported)} image archives in {result.seconds:.1f}s",
            "images_imported",
            failed=len(result.failed),
        )

    def wait_host_prepared(self) -> None:
        """Block until :meth:`prepare_host` is done (kubeadm needs the images)."""
        if not self._host_prepared.is_set():
            self._wait("image import", self._host_prepared.is_set, self.cfg.timeouts.command_s)

    def _prepare_kernel(self) -> None:
        import subprocess

        for mod in ("overlay", "br_netfilter"):
            subprocess.run(["modprobe", mod], capture_output=True, check=False)
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
        ):
            try:
                Path("/proc/sys", key).write_text(value)
            except OSError as err:
                log.warning("cannot set sysctl", extra={"phase": "prepare", "key": key, "error": str(err)})

    # -- leader -------------------------------------------------------------------------
    def start_phylactery(self, wait: bool = True) -> None:
        """Start Phylactery (it brings up HAProxy and keepalived); with ``wait``, return once
        it serves ``/healthz`` (HAProxy and keepalived running with a rendered config)."""
        if not self._phylactery_started:
            argv = [sys.executable, "-m", "leader", "phylactery", "--config", str(self.config_path)]
            self.services.start("phylactery", argv)
            self._phylactery_started = True
        if wait and not self._phylactery_up:
            self._wait("Phylactery /healthz", lambda: probes.phylactery_healthy(self.phylactery_url, 0.5), 60, 0.05)
            self._phylactery_up = True
            self.say(self.phase, "Phylactery, HAProxy and keepalived are up", "phylactery_up")

    @property
    def phylactery_url(self) -> str:
        """This node's own Phylactery."""
        return f"http://{self.cfg.node.address}:{self.cfg.phylactery.port}"

    def refresh_phylactery(self) -> None:
        """Ask the local Phylactery to reconcile now (it re-registers in a new generation)."""
        try:
            probes.phylactery_post(self.phylactery_url, "/v1/refresh", self.store.read_token(), {}, timeout_s=2)
        except OSError as err:
            log.info("local Phylactery did not take the refresh", extra={"phase": self.phase, "error": str(err)})

    def lead(self, epoch: int, restore_from: Path | None = None) -> None:
        """Initialise the generation: kubeadm init (etcd restored from ``restore_from`` when the
        generation was started from a snapshot), publish join material, mark ready."""
        self.phase = "init"
        if self.driver.is_joined():
            self.say("init", "leftovers of an earlier init/join found; running kubeadm reset first")
            self.driver.reset()
        token, certificate_key = generate_token(), generate_certificate_key()
        if restore_from is not None:
            self.say("init", f"restoring etcd from the snapshot {restore_from}", "etcd_restore")
        self.say("init", "running kubeadm init (certificates uploaded with our certificate key)")
        started = time.monotonic()
        self.wait_host_prepared()
        result = self.driver.init(token, certificate_key, self.generation, restore_from)
        kubeadm_s = round(time.monotonic() - started, 3)
        self.store.check_epoch(epoch)
        self.start_phylactery()
        vip_url = f"https://{self.cfg.vip.address}:{self.cfg.vip.port}/readyz"
        self._wait("API behind the VIP", lambda: probes.api_ready(vip_url, result.ca_cert_pem), 120, 0.05)
        self.say(
            "init",
            f"the API answers behind the VIP {self.cfg.vip.address}:{self.cfg.vip.port}",
            "api_ready",
            kubeadm_s=kubeadm_s,
        )
        now = time.time()
        self.store.publish_join_material(
            JoinMaterial(
                generation=self.generation,
                epoch=epoch,
                api_server_endpoint=f"{self.cfg.vip.hostname}:{self.cfg.vip.port}",
                token=token,
                token_expires_at=now + TOKEN_TTL_S,
                ca_cert_hashes=[ca_cert_hash(result.ca_cert_pem)],
                certificate_key=certificate_key,
                certificate_key_expires_at=now + CERTIFICATE_KEY_TTL_S,
                ca_cert=result.ca_cert_pem.decode(),
                published_by=self.cfg.node.name,
            )
        )
        self.store.write_admin_kubeconfig(result.admin_kubeconfig)
        self.apply_manifests()
        self.store.mark_ready(epoch)
        self.say("init", f"generation {self.generation} is ready; join material published", "leader_ready")
        self.wait_node_ready()

    def apply_manifests(self) -> None:
        """Apply ``kubernetes.manifests`` (the CNI first) with the admin kubeconfig."""
        if not self.cfg.kubernetes.manifests:
            return
        from kubernetes import config, utils

        api = config.new_client_from_config(config_file=str(self.driver.admin_kubeconfig))
        for manifest in self.cfg.kubernetes.manifests:
            path = self.cfg.host_path(manifest)
            self.say("init", f"applying {manifest}")
            utils.create_from_yaml(api, str(path))

    # -- followers ----------------------------------------------------------------------
    def follow(self) -> None:
        """Wait until the generation is ready, or until its leader looks dead (then return to
        run the election again). Control nodes bring Phylactery up meanwhile."""
        self.phase = "follow"
        ttl = self.cfg.timeouts.lease_ttl_s
        if self.cfg.is_control:
            self.start_phylactery()
        last_lease_check = 0.0
        while True:
            state = self.store.read_state()
            if state.ready or state.generation != self.generation:
                return
            now = time.monotonic()
            if now - last_lease_check >= 1.0:
                last_lease_check = now
                if not self.store.snapshot().leader_alive(ttl):
                    return
            time.sleep(self.cfg.timeouts.poll_interval_s)

    def _phylactery_urls(self) -> list[str]:
        """Other control nodes' Phylacteries, those with the freshest heartbeat first (a dead
        node costs a connection timeout)."""
        now = self.store.share_now()
        ranked = []
        for m in self.store.members():
            if m.name == self.cfg.node.name:
                continue
            hb = self.store.read_heartbeat(m.name, now)
            ranked.append((hb.age_s if hb is not None else float("inf"), m.phylactery_url))
        return [url for _, url in sorted(ranked)]

    def prune_self(self) -> bool:
        """Ask a live Phylactery to remove this node's stale Node and etcd member."""
        token = self.store.read_token()
        body = {"name": self.cfg.node.name, "address": self.cfg.node.address}
        for url in self._phylactery_urls():
            try:
                status, answer = probes.phylactery_post(url, "/v1/prune", token, body)
            except OSError as err:
                log.info("Phylactery did not answer", extra={"phase": "join", "url": url, "error": str(err)})
                continue
            if status == 200:
                self.say(
                    "join",
                    f"pruned my stale state through {url}",
                    "pruned",
                    deleted_nodes=answer.get("deleted_nodes"),
                    removed_etcd_members=[m["id"] for m in answer.get("removed_etcd_members", [])],
                )
                return True
            log.info(
                "Phylactery refused the prune", extra={"phase": "join", "url": url, "status": status, "answer": answer}
            )
        return False

    def ensure_join_material(self) -> None:
        """Ask a live Phylactery to make sure join.json is still accepted by the API."""
        token = self.store.read_token()
        for url in self._phylactery_urls():
            try:
                status, answer = probes.phylactery_post(url, "/v1/join-material", token, {}, timeout_s=60)
            except OSError as err:
                log.info("Phylactery did not answer", extra={"phase": "join", "url": url, "error": str(err)})
                continue
            if status == 200:
                if answer.get("refreshed"):
                    self.say(
                        "join",
                        f"join material refreshed through {url}: {', '.join(answer['refreshed'])}",
                        "join_material_refreshed",
                    )
                return
            log.info("Phylactery could not ensure join material", extra={"phase": "join", "url": url, "answer": answer})

    def _needs_prune(self, attempt: int) -> bool:
        """Skip the prune only when this node has never been part of this generation."""
        prev = self.previous
        first_time = prev is None or prev.generation != self.generation
        return attempt > 1 or not first_time

    def join(self) -> None:
        """Join the ready generation; retries with ``kubeadm reset -f`` and backoff."""
        self.phase = "join"
        if self.driver.is_joined():
            self.say("join", "leftovers of an earlier join found; running kubeadm reset first")
            self.driver.reset()
        self.await_live_control_plane()
        self.wait_host_prepared()
        attempts = self.cfg.timeouts.join_attempts
        last_error = ""
        for attempt in range(1, attempts + 1):
            if self._needs_prune(attempt):
                # Other nodes' Phylacteries do both, side by side: a rejoin may come days after
                # init (uploaded certificates last 2 h, the token 24 h), and a rebooted node
                # leaves its Node and etcd member behind.
                with ThreadPoolExecutor(2) as pool:
                    material_done = pool.submit(self.ensure_join_material)
                    pruned = pool.submit(self.prune_self)
                    material_done.result()
                    pruned.result()
            if self.cfg.is_control:
                self.start_phylactery()  # our HAProxy and keepalived run before kubeadm does
            material = self.store.read_join_material()
            held = False
            try:
                if self.cfg.is_control:
                    self._wait("control-plane join slot", self._take_join_slot, self.cfg.timeouts.command_s)
                    held = True
                self.say(
                    "join",
                    f"running kubeadm join as {self.cfg.role} (attempt {attempt}/{attempts})",
                    "join_started",
                    attempt=attempt,
                )
                started = time.monotonic()
                if self.cfg.is_control:
                    self.driver.join_control_plane(material)
                else:
                    self.driver.join_worker(material)
                self.say(
                    "join",
                    "kubeadm join succeeded",
                    "joined",
                    attempt=attempt,
                    kubeadm_s=round(time.monotonic() - started, 3),
                )
                break
            except DriverError as err:
                last_error = str(err)
                self.say("join", f"join attempt {attempt} failed: {err}", "join_failed", attempt=attempt)
                self.driver.reset()
                if attempt == attempts:
                    raise JoinFailed(last_error) from err
                time.sleep(self.cfg.timeouts.join_backoff_s * attempt)
            finally:
                if held:
                    self.store.release_join_slot()
        self.wait_node_ready()

    def await_live_control_plane(self) -> None:
        """Return once the API answers behind the VIP; raises :class:`GenerationChanged` when
        the generation moves on (by our hand, see :meth:`control_plane_alive`, or another's)."""
        self._silent_since = None
        while True:
            state = self.store.read_state()
            if state.generation != self.generation:
                raise GenerationChanged(f"generation {state.generation} replaced {self.generation}")
            if self.control_plane_alive():
                return
            time.sleep(max(self.cfg.timeouts.poll_interval_s, 0.5))

    def control_plane_alive(self) -> bool:
        """Does the API answer behind the VIP? When it has been silent for
        ``timeouts.cluster_lost_grace_s`` the cluster is lost (every node rebooted without a
        reset, or etcd lost quorum): a control node applies ``on_cluster_lost``; ``reinit``
        starts a new generation and raises :class:`GenerationChanged`."""
        try:
            ca = self.store.read_join_material().ca_cert.encode()
        except (FileNotFoundError, ValueError):
            ca = b""
        url = f"https://{self.cfg.vip.address}:{self.cfg.vip.port}/readyz"
        if ca and probes.api_ready(url, ca, timeout_s=1.0):
            self._silent_since, self._lost_reported = None, False
            return True
        grace = self.cfg.timeouts.cluster_lost_grace_s
        now = time.monotonic()
        if self._silent_since is None:
            self._silent_since = now
            log.info(
                f"the API of generation {self.generation} does not answer behind the VIP; "
                f"calling the cluster lost if it stays silent for {grace:.0f}s",
                extra={"phase": self.phase},
            )
        silent = now - self._silent_since
        if silent >= grace and self.cfg.is_control and not self._lost_reported:
            why = (
                f"cluster lost: generation {self.generation} is marked ready but no API answered behind "
                f"{self.cfg.vip.address}:{self.cfg.vip.port} for {silent:.0f}s"
            )
            if self.cfg.on_cluster_lost in ("reinit", "restore"):
                snapshots = self.store.snapshots() if self.cfg.on_cluster_lost == "restore" else []
                source = snapshots[0] if snapshots else None
                plan = f"restoring etcd from {source.name}" if source else "starting from nothing"
                if self.cfg.on_cluster_lost == "restore" and source is None:
                    plan += " (on_cluster_lost is 'restore' but the share holds no snapshot)"
                new = self.store.start_generation(f"{why}; {plan}", expected=self.generation, restore_from=source)
                outcome = f"started generation {new.generation}, {plan}" if new else "another node started a new one"
                self.say(self.phase, f"{why}; {outcome}", "cluster_lost")
                raise GenerationChanged(why)
            self.say(self.phase, f"{why}; on_cluster_lost is 'wait': waiting for 'ek8s reset'", "cluster_lost")
            self._lost_reported = True
        return False

    def _take_join_slot(self) -> bool:
        holder = self.store.try_join_slot(self.boot_id, self.cfg.timeouts.lease_ttl_s)
        if holder is not None and self.phase != "join-wait":
            self.phase = "join-wait"
            log.info(f"{holder} is joining the control plane; waiting for my turn", extra={"phase": "join"})
        return holder is None

    def wait_node_ready(self) -> None:
        kubeconfig = self.driver.kubelet_kubeconfig
        self._wait(
            "my Node Ready",
            lambda: probes.node_ready(kubeconfig, self.cfg.node.name) is True,
            self.cfg.timeouts.node_ready_s,
        )
        self.say("ready", f"node {self.cfg.node.name} is Ready", "node_ready")

    # -- steady state -------------------------------------------------------------------
    def watch(self) -> bool:
        """Follow the generation. Returns False when a new generation starts (the caller
        resets and runs the election again), True when asked to stop. Checks every second
        that the API answers behind the VIP (quorum loss shows there first)."""
        self.phase = "watch"
        self._silent_since = None
        while not self._stop.is_set():
            state = self.store.read_state()
            if state.generation != self.generation:
                self.say(
                    "watch",
                    f"generation {state.generation} replaced {self.generation}; resetting to follow it",
                    "generation_changed",
                )
                self.driver.reset()
                return False
            try:
                self.control_plane_alive()
            except GenerationChanged:
                continue  # the next pass sees the new generation, resets and returns
            if self.cfg.is_control and not self.services.is_running("phylactery"):
                # Supervision: Phylactery in turn restarts HAProxy and keepalived when it reconciles.
                self.say("watch", "Phylactery is not running; starting it again", "phylactery_restarted")
                self._phylactery_started = self._phylactery_up = False
                self.start_phylactery()
            self._stop.wait(max(1.0, self.cfg.timeouts.poll_interval_s))
        return True


def _warm_imports() -> None:
    """Import the kubernetes client (~0.3 s) while we wait, not when the Node check needs it."""
    import kubernetes.client
    import kubernetes.config  # noqa: F401
