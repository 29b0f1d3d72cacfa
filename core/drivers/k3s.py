"""The k3s driver: embedded etcd, one config file, the VIP as k3s's fixed registration address.

What k3s does is taken from its documentation (docs.k3s.io: "High Availability Embedded etcd",
"Configuration File", "Token Management", "Uninstalling") and its source
(github.com/k3s-io/k3s; paths below are in that repository):

* the leader runs ``k3s server`` with ``cluster-init: true`` in
  ``/etc/rancher/k3s/config.yaml``; the file's keys are the long flag names (``token``,
  ``agent-token``, ``tls-san``, ``node-name``, ``node-ip``, ``advertise-address``,
  ``cluster-cidr``, ``service-cidr``, ``https-listen-port``, ``write-kubeconfig-mode``);
* other control nodes run ``k3s server`` with ``server: https://<VIP name>:<port>`` (the
  VIP in front of the servers is the documented fixed registration address) and the server
  token; workers run ``k3s agent`` with the *agent* token: k3s keeps the two as the
  ``server`` and ``node`` users of its passwd file (``pkg/daemons/control/deps/deps.go``,
  ``readTokens``), so a worker's credential cannot join a server;
* tokens: ``K10<hex sha256 of the CA bundle>::<user>:<secret>``
  (``pkg/clientaccess/token.go``, ``FormatTokenBytes`` and ``hashCA``: for a bundle of one
  certificate, the sha256 of the file's bytes as ``GET /cacerts`` returns them); a joiner
  downloads ``/cacerts``, refuses a CA whose hash differs ("token CA hash does not match the
  Cluster CA certificate hash") and then authenticates with the user and secret;
* the admin kubeconfig ``/etc/rancher/k3s/k3s.yaml`` names ``https://127.0.0.1:<port>``; the
  copy for the operator (``kube.config``) names the VIP instead; it is never join material;
* embedded etcd: data in ``/var/lib/rancher/k3s/server/db/etcd``, client pair
  ``server/tls/etcd/client.{crt,key}`` signed by ``server/tls/etcd/server-ca.crt``
  (``pkg/etcd/etcd.go``: ``dbDir``, ``toTLSConfig``). k3s's ``cluster()`` serves only gRPC
  on the client URLs (``https://127.0.0.1:2379`` and ``https://<node-ip>:2379``) and etcd's
  HTTP JSON gateway only on ``https://127.0.0.1:2382`` (``--listen-client-http-urls``, "to
  free the listen URLs for dedicated use by GRPC", etcd-io/etcd#15402; etcd >= 3.4.25/3.5.8),
  so this node's JSON calls (:mod:`core.etcd`: the agent's member view, Phylactery's prune,
  reaper, snapshots and metrics, the re-form's quorum wait) go to :data:`ETCD_ENDPOINT`, and
  other members are judged alive by a TLS handshake on their gRPC client URL
  (:func:`core.etcd.member_answers`); raft runs with a 500 ms heartbeat and a 5000 ms
  election timeout;
* members are named ``<node>-<first 8 hex digits of a UUID>`` (``setName``); a joining
  server is refused fatally when any member k3s takes for its node (the name up to its last
  ``-``, any suffix, any address: :func:`member_node`) is not its own: "duplicate node name
  found, please use a unique name for this node" (``ETCD.join``). So the driver names this
  node's members by that rule (:meth:`K3sDriver.etcd_member_node`) and Phylactery's prune
  removes every one of them before a rejoin (``phylactery/prune.py``);
* a joining server's ``ETCD.join`` is retried every second for ever while etcd refuses it
  with "too many learner members" or "unhealthy cluster" or the member list cannot be had
  ("Waiting for other members to finish joining etcd cluster: ..."); the member joins as a
  learner, which only the etcd leader's ``manageLearners`` (a 15 s tick) promotes, removing
  one stalled for 5 min; until then the server logs "Failed to test data store connection:
  this server has not yet been promoted from learner to voting member" every 5 s
  (``pkg/cluster/managed.go``, ``testClusterDB``). The service looks "running" all along: the
  driver names each fatal refusal (:data:`REFUSALS`) and fails a join whose retry lines
  (:data:`RETRY_LINES`) go on for :data:`JOIN_STALL_S` seconds (:func:`join_verdict`) instead
  of waiting out ``timeouts.command_s`` in silence;
* ``k3s server --cluster-reset`` re-forms etcd from the local data as a one-member cluster
  and exits once it runs ("Managed etcd cluster membership has been reset, restart without
  --cluster-reset flag now. Backup and delete ${datadir}/server/db on each peer etcd server
  and rejoin the nodes", ``ETCD.Reset`` in ``pkg/etcd/etcd.go``); with
  ``--cluster-reset-restore-path=<file>`` it first restores that snapshot into
  ``server/db/etcd`` as a one-member cluster (the old data moved to ``db/etcd-old-<unix
  ts>``, ``ETCD.Restore``), then exits the same way; the server is then started normally, and
  other servers join it fresh. Its next normal start deletes its own node's
  ``<node>.node-password.k3s`` Secret, which came back from the snapshot
  (``pkg/cluster/managed.go``, ``start``: the ``reset-flag`` file);
* snapshots: ``k3s etcd-snapshot save --name N --dir D`` (flags in
  ``pkg/cli/cmds/etcd_snapshot.go``; since v1.29 the command asks the running server,
  ``--etcd-server``, default ``https://127.0.0.1:6443``, authenticating with the token in
  ``${data-dir}/server/token``) writes ``D/<N>-<node>-<unix seconds>`` and logs "Snapshot
  <file> saved." (``pkg/etcd/snapshot.go``, ``pkg/cli/etcdsnapshot``). k3s keeps its
  bootstrap data (CA keys, passwd) in etcd under ``/bootstrap/<12 hex digits of sha256(token
  secret)>``, encrypted with the token secret (``pkg/cluster/encrypt.go``), so a snapshot is
  usable only with the token it was taken with (docs.k3s.io "Backup and Restore": "If you do
  not use the same token value when restoring, the snapshot will be unusable"); a restore with
  another token fails with "bootstrap data already found and encrypted with different token"
  (``pkg/cluster/storage.go``, ``getBootstrapKeyFromStorage``). Hence the driver keeps the
  token's secret with every snapshot (:attr:`core.drivers.base.SnapshotTaken.secret`) and the
  restoring leader reuses it as its server token;
* reset does what ``k3s-killall.sh`` and ``k3s-uninstall.sh`` (k3s's ``install.sh``) do to
  k3s's own state: stop k3s, kill the containerd-shims, unmount k3s's and the kubelet's mounts,
  (on a node whose root is ``/``) remove the CNI namespaces, interfaces and iptables rules,
  then remove ``/etc/rancher/k3s``, ``/run/k3s``,
  ``/run/flannel``, ``/var/lib/rancher/k3s`` and ``/var/lib/kubelet``. Like the uninstall
  script it keeps ``/etc/rancher/node/password``, so a node that resets and rejoins in the
  same boot keeps its node password; a RAM root loses it at every reboot, which is why
  Phylactery removes the ``<node>.node-password.k3s`` Secret before a rejoin.

k3s runs as a service (``k3s`` for servers, ``k3s-agent`` for workers, the unit names of
k3s's install script) through :mod:`core.services`; the driver writes the config, starts the
service and waits until k3s has written the files a completed start leaves
(:meth:`K3sDriver.is_joined`), failing early when the service exits or logs a refusal that
k3s itself would retry forever (a rejected node password). When node.yaml's ``root`` is not
``/`` (the lab), ``--rootfs <root>`` is added: the emulated k3s's only flag real k3s lacks.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.config import NodeConfig
from core.drivers.base import CommandRunner, Credentials, DriverError, InitResult, SnapshotTaken
from core.fileperm import ensure_dir, write_atomic
from core.logs import get_logger
from core.services import ProcessServices, ServiceError, service_manager
from core.share import JoinMaterial

CONFIG = "/etc/rancher/k3s/config.yaml"
ADMIN_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
DATA_DIR = "/var/lib/rancher/k3s"
SERVER_CA = f"{DATA_DIR}/server/tls/server-ca.crt"
ETCD_TLS = f"{DATA_DIR}/server/tls/etcd"
ETCD_DATA = f"{DATA_DIR}/server/db/etcd"
KUBELET_KUBECONFIG = f"{DATA_DIR}/agent/kubelet.kubeconfig"
NODE_PASSWORD = "/etc/rancher/node/password"
# etcd's JSON gateway, which k3s serves only here (the client port 2379 speaks gRPC only).
ETCD_ENDPOINT = "https://127.0.0.1:2382"
# k3s's default snapshot directory (--etcd-snapshot-dir: ${data-dir}/server/db/snapshots, made
# 0700 by k3s); on-demand snapshots land here before the driver moves them to the share. The
# default on purpose: since v1.29 the server writes the file, and it creates only this one
# (pkg/etcd/snapshot.go, snapshotDir), so --dir naming it changes nothing either way.
SNAPSHOT_DIR = f"{DATA_DIR}/server/db/snapshots"
SERVER_TOKEN = f"{DATA_DIR}/server/token"
SNAPSHOT_NAME = "ek8s"  # --name: k3s writes <name>-<node>-<unix seconds>
_SAVED = re.compile(r"Snapshot (\S+) saved")
# What k3s-uninstall.sh removes of k3s's state (not the binaries and units, which are the image's).
RESET_PATHS = ("/etc/rancher/k3s", "/run/k3s", "/run/flannel", DATA_DIR, "/var/lib/kubelet")
# What k3s-killall.sh (k3s's install.sh) does beyond stopping the k3s services: kill the
# containerd-shim trees of k3s's bundled containerd, unmount and remove what is mounted under
# these prefixes (deepest first; k3s matches them as "^<prefix>", so "cni-" is a name prefix),
# delete the CNI namespaces and interfaces, remove /var/lib/cni and drop the KUBE-, CNI- and
# flannel iptables rules.
KILLALL_MOUNTS = ("/run/k3s", "/var/lib/kubelet/pods", "/var/lib/kubelet/plugins", "/run/netns/cni-")
CNI_INTERFACES = ("cni0", "flannel.1", "flannel-v6.1", "kube-ipvs0", "flannel-wg", "flannel-wg-v6")
_SHIM = re.compile(r"/data/[^/]+/bin/containerd-shim")
# k3s's airgap image tarballs, which the node image puts here (image_builder/Containerfile.k3s;
# docs.k3s.io "Air-Gap Install": k3s imports every archive in this directory at start). Reset
# keeps them: the node image is the only copy on a RAM root, and a rejoin needs them.
AIRGAP_IMAGES = f"{DATA_DIR}/agent/images"
# k3s's tokens do not expire (only `k3s token create` bootstrap tokens do, and the driver uses
# none): the published expiry is far enough away that nothing renews them.
NEVER_S = 10 * 365 * 24 * 3600.0
# k3s's refusals of a start, by a piece of the line it logs, and the name the driver gives each
# in its error (and so in the agent's join_failed event). k3s exits on most (level=fatal); it
# retries the node-password refusal for ever (pkg/agent/config/config.go, after a 403).
REFUSALS = (
    ("Node password rejected", "node password rejected"),
    ("duplicate node name found", "duplicate node name (a stale etcd member of this node)"),
    ("etcd cluster join failed", "etcd refused the member"),
    ("token CA hash does not match", "token CA hash mismatch"),
    ("failed to get CA certs", "server unreachable"),
    ("failed to get bootstrap data", "bootstrap data refused (wrong token?)"),
    ("encrypted with different token", "snapshot's bootstrap data has another token"),
    ("was previously reset", "cluster-reset flag left"),
)
# Lines k3s logs while it waits on something it retries for ever (pkg/etcd/etcd.go Start and
# pkg/cluster/managed.go testClusterDB). A join that keeps logging them is stalled.
RETRY_LINES = (
    "Waiting for other members to finish joining etcd cluster",
    "Waiting to retrieve etcd cluster member list",
    "has not yet been promoted from learner to voting member",
)
# How long a join may go on logging only retry lines: longer than a healthy join takes to be
# promoted (the leader's 15 s manageLearners tick, then testClusterDB's 5 s) and than etcd's
# 5 s guard after a member connects; far shorter than command_s (600 s).
JOIN_STALL_S = 60.0
WAIT_LOG_S = 10.0  # while k3s retries, the driver says what it waits on this often
TOKEN_PREFIX = "K10"
_TOKEN = re.compile(r"^K10([0-9a-f]{64})?::([^:]+):(.+)$")
_SECRETS = re.compile(r"(K10[0-9a-f]{0,64}::[^:\s]+:|\b(?:token|agent-token): *)[^\s\"']+")

log = get_logger(__name__, "k3s")


def k3s_minor(version: str) -> int:
    """The Kubernetes minor of node.yaml's ``kubernetes.version`` (``v1.32.1`` -> 32), which
    is the k3s release the node image carries (``image_builder/build.sh``: ``<version>+k3s1``).
    Raises ``ValueError`` on another shape."""
    parts = version.lstrip("v").split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not a Kubernetes version: {version!r}")
    return int(parts[1])


def embedded_etcd(version: str) -> str:
    """The etcd minor k3s of that Kubernetes minor embeds (k3s's release notes: etcd 3.5 up to
    1.33, 3.6 from 1.34). What this driver asks of it is the same in both (the JSON gateway on
    ``--listen-client-http-urls``, learners, ``k3s etcd-snapshot save`` through the server,
    ``--cluster-reset``: k3s carries its own restore, so etcd 3.6 dropping ``etcdctl snapshot
    restore`` changes nothing here); the lab runs etcd 3.5.16 for every minor."""
    return "3.6" if k3s_minor(version) >= 34 else "3.5"


def member_node(member_name: str) -> str:
    """The node k3s takes an etcd member for (``pkg/etcd/etcd.go``, ``ETCD.join``): the
    member's name up to its last ``-`` when that is past the second character, else the whole
    name. ``control0-0a1b2c3d`` -> ``control0``, ``ctl-1-0a1b2c3d`` -> ``ctl-1``; k3s refuses
    a joining server while any other member maps to its node name."""
    cut = member_name.rfind("-")
    return member_name[:cut] if cut > 1 else member_name


@dataclass(frozen=True)
class Verdict:
    """What k3s's output says about a start: ``refusal`` (a name from :data:`REFUSALS`),
    ``waiting`` (the piece of :data:`RETRY_LINES` k3s is retrying on now, "" when none),
    ``line`` (k3s's message)."""

    refusal: str = ""
    waiting: str = ""
    line: str = ""


# k3s's lines that end a wait of RETRY_LINES: etcd joined, or the member passed its test.
WAIT_OVER = ("Starting etcd to join cluster", "Starting etcd for existing cluster member", "data store connection OK")


def join_verdict(output: str) -> Verdict:
    """Read k3s's output since a start: the first refusal of :data:`REFUSALS` in it; else the
    wait k3s is in now (its newest :data:`RETRY_LINES` line, unless a :data:`WAIT_OVER` line
    came after it); else nothing."""
    waiting = line_now = ""
    for line in output.splitlines():
        for piece, name in REFUSALS:
            if piece in line:
                return Verdict(refusal=name, line=_msg(line))
        retry = next((piece for piece in RETRY_LINES if piece in line), "")
        if retry:
            waiting, line_now = retry, _msg(line)
        elif any(piece in line for piece in WAIT_OVER):
            waiting = line_now = ""
    return Verdict(waiting=waiting, line=line_now)


def _msg(line: str) -> str:
    """``msg="..."`` of a logrus line, or the line."""
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
    return m.group(1) if m else line.strip()


def redact(text: str) -> str:
    """Hide token secrets (``K10...::user:<secret>``, ``token: <secret>``) before logging."""
    return _SECRETS.sub(lambda m: m.group(1) + "<redacted>", text)


def ca_hash(ca_bundle: bytes) -> str:
    """k3s's CA hash: hex sha256 of the CA bundle's bytes (one certificate, as k3s's own
    ``server-ca.crt`` is; ``pkg/clientaccess/token.go`` ``hashCA``)."""
    return hashlib.sha256(ca_bundle).hexdigest()


def secure_token(ca_bundle: bytes, user: str, secret: str) -> str:
    """``K10<ca_hash>::<user>:<secret>``: ``user`` is ``server`` for the server token and
    ``node`` for the agent token (k3s's passwd users)."""
    return f"{TOKEN_PREFIX}{ca_hash(ca_bundle)}::{user}:{secret}"


@dataclass(frozen=True)
class Token:
    """A parsed secure token: ``ca_hash`` (64 hex digits, or "" when absent), user, secret."""

    ca_hash: str
    user: str
    secret: str


def parse_token(text: str) -> Token:
    """Parse ``K10[<hash>]::<user>:<secret>``. Raises ``ValueError`` (the message never holds
    the secret) for anything else, including a hash that is not 64 hex digits."""
    m = _TOKEN.match(text.strip())
    if m is None:
        raise ValueError("not a k3s secure token (K10<sha256 of the CA>::<user>:<secret>)")
    return Token(ca_hash=m.group(1) or "", user=m.group(2), secret=m.group(3))


def generate_secret() -> str:
    """A new token secret: 32 random bytes, hex (k3s generates its own the same way when no
    token is given; any string without ':' works)."""
    return secrets.token_hex(32)


def _common(cfg: NodeConfig) -> dict[str, Any]:
    """Keys of every node's config: its name and address and, from the inventory
    (core/noderoles.py), ``node-label`` (only those a kubelet may set: k3s hands them to its
    kubelet, which refuses others) and ``node-taint``, which k3s applies when the node
    registers (docs.k3s.io, "Node Labels and Taints")."""
    doc: dict[str, Any] = {"node-name": cfg.node.name, "node-ip": cfg.node.address}
    scheduling = cfg.node.scheduling
    labels = scheduling.kubelet_labels()
    if labels:
        doc["node-label"] = [f"{k}={v}" for k, v in labels.items()]
    if scheduling.taints:
        doc["node-taint"] = [str(t) for t in scheduling.taints]
    return doc


def _server(cfg: NodeConfig) -> dict[str, Any]:
    sans = [cfg.vip.address, cfg.vip.hostname, *cfg.kubernetes.extra_sans]
    return {
        **_common(cfg),
        "advertise-address": cfg.node.address,
        "https-listen-port": cfg.kubernetes.api_server_port,
        "tls-san": list(dict.fromkeys(sans)),
        "cluster-cidr": cfg.kubernetes.pod_subnet,
        "service-cidr": cfg.kubernetes.service_subnet,
        "write-kubeconfig-mode": "0600",
        # Phylactery saves snapshots to the share (k3s etcd-snapshot save); k3s's own schedule
        # (twice a day, 5 kept in server/db/snapshots) would only fill a RAM root.
        "etcd-disable-snapshots": True,
    }


def registration_url(cfg: NodeConfig) -> str:
    """``https://<VIP name>:<VIP port>``, k3s's fixed registration address (HAProxy behind
    keepalived's VIP, in front of every server's port ``kubernetes.api_server_port``)."""
    return f"https://{cfg.vip.hostname}:{cfg.vip.port}"


def render_init_config(cfg: NodeConfig, server_secret: str, agent_secret: str) -> str:
    """``config.yaml`` of the leader: ``cluster-init`` with the generated token and agent token."""
    doc = {"cluster-init": True, "token": server_secret, "agent-token": agent_secret, **_server(cfg)}
    return yaml.safe_dump(doc, sort_keys=False)


def render_join_config(cfg: NodeConfig, material: JoinMaterial) -> str:
    """``config.yaml`` of a joining node: servers get the server token (and the agent
    token's secret, which every server must hold alike), workers only the agent token.
    Raises ``ValueError`` when the material's tokens are not secure k3s tokens."""
    if cfg.is_control:
        agent = parse_token(material.certificate_key)
        doc = {
            "server": registration_url(cfg),
            "token": material.token,
            "agent-token": agent.secret,
            **_server(cfg),
        }
    else:
        doc = {"server": registration_url(cfg), "token": material.certificate_key, **_common(cfg)}
    return yaml.safe_dump(doc, sort_keys=False)


def operator_kubeconfig(text: str, server: str) -> bytes:
    """k3s.yaml with every cluster's ``server`` set to ``server`` (the VIP URL). Raises
    ``ValueError`` when ``text`` is not a kubeconfig."""
    try:
        doc = yaml.safe_load(text)
        for entry in doc["clusters"]:
            entry["cluster"]["server"] = server
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ValueError(f"not a kubeconfig: {err}") from err
    return yaml.safe_dump(doc, sort_keys=False).encode()


def mounts_under(mounts: str, prefixes: list[str]) -> list[str]:
    """Mount points in ``mounts`` (``/proc/self/mounts`` text; octal escapes such as ``\\040``
    decoded) that start with one of ``prefixes`` (plain string prefixes, as k3s-killall.sh's
    ``$2 ~ "^" path``), deepest first (its ``sort -r``)."""
    points = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        if any(point.startswith(p) for p in prefixes):
            points.append(point)
    return sorted(set(points), reverse=True)


def iptables_without_k8s(saved: str) -> str:
    """``iptables-save`` output without the lines k3s-killall.sh drops (``grep -v KUBE- | grep
    -v CNI- | grep -iv flannel``): Kubernetes' and the CNI's chains and rules."""
    keep = [
        line
        for line in saved.splitlines()
        if "KUBE-" not in line and "CNI-" not in line and "flannel" not in line.lower()
    ]
    return "\n".join(keep) + "\n"


def _remove_except(path: Path, keep: Path) -> None:
    """Remove ``path`` (a tree; errors ignored), but not ``keep`` when it lies inside it: the
    directories leading to ``keep`` stay, everything else in them goes."""
    if path != keep and path in keep.parents and path.is_dir():
        for child in path.iterdir():
            _remove_except(child, keep)
    elif path != keep:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class K3sDriver:
    """Runs the k3s executable named in node.yaml (``kubernetes.k3s``) as the ``k3s`` or
    ``k3s-agent`` service. One start or command at a time; :meth:`abort` ends it."""

    name = "k3s"
    prune_kinds: tuple[str, ...] = ("node", "etcd_member", "node_password")
    restores_snapshots = True
    restore_needs_secret = True
    control_only_fields: tuple[str, ...] = ("token",)  # the server token; workers use the agent token
    etcd_endpoint = ETCD_ENDPOINT
    join_stall_s = JOIN_STALL_S  # how long one of k3s's retry loops may last (:meth:`_start_and_wait`)

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self._runner = CommandRunner("k3s", cfg.timeouts.command_s, redact, log)
        self.services = service_manager(cfg.service_manager, cfg.root)

    # -- files this distribution keeps on the node -------------------------------------
    @property
    def service(self) -> str:
        """``k3s`` on control nodes, ``k3s-agent`` on workers (install.sh's unit names)."""
        return "k3s" if self.cfg.is_control else "k3s-agent"

    @property
    def kubelet_service(self) -> str:
        """:attr:`service`: k3s runs the kubelet inside itself, so restarting the kubelet is
        restarting k3s."""
        return self.service

    @property
    def kubelet_kubeconfig(self) -> Path:
        """``/var/lib/rancher/k3s/agent/kubelet.kubeconfig`` as a host path."""
        return self.cfg.host_path(KUBELET_KUBECONFIG)

    @property
    def admin_kubeconfig(self) -> Path:
        """``/etc/rancher/k3s/k3s.yaml`` as a host path (servers)."""
        return self.cfg.host_path(ADMIN_KUBECONFIG)

    @property
    def config_path(self) -> Path:
        """``/etc/rancher/k3s/config.yaml`` as a host path (0600: it holds the tokens)."""
        return self.cfg.host_path(CONFIG)

    def is_joined(self) -> bool:
        """Whether the kubelet kubeconfig exists: k3s started as server or agent and got its
        node credentials (after the token and node-password checks)."""
        return self.kubelet_kubeconfig.exists()

    def etcd_member_node(self, member_name: str) -> str:
        """The node k3s takes the member for (:func:`member_node`): ``control0`` for
        ``control0-0a1b2c3d``. Every member that maps to a node's name is that node's: k3s
        refuses the node's join while one is left ("duplicate node name found")."""
        return member_node(member_name)

    def has_etcd_data(self) -> bool:
        """``/var/lib/rancher/k3s/server/db/etcd/member`` exists."""
        return self.cfg.host_path(f"{ETCD_DATA}/member").is_dir()

    def etcd_client_context(self) -> Any:
        """k3s's etcd client pair (``server/tls/etcd/client.{crt,key}``, CA
        ``server-ca.crt``), or None before k3s made it (workers never have one)."""
        from core.etcd import client_ssl_context

        tls = self.cfg.host_path(ETCD_TLS)
        if not (tls / "client.crt").exists():
            return None
        return client_ssl_context(tls / "server-ca.crt", tls / "client.crt", tls / "client.key")

    # -- running k3s ------------------------------------------------------------------------
    def _argv(self, *args: str) -> list[str]:
        argv = [self.cfg.kubernetes.k3s, *args, "--config", CONFIG]
        if self.cfg.root != Path("/"):
            argv += ["--rootfs", str(self.cfg.root)]
        return argv

    def _write_config(self, text: str) -> None:
        ensure_dir(self.config_path.parent)
        write_atomic(self.config_path, text)

    def _log_mark(self) -> tuple[int, float]:
        """Where the service's log stands now: (byte offset in process mode, wall time)."""
        if isinstance(self.services, ProcessServices):
            path = self.services.log_path(self.service)
            return (path.stat().st_size if path.exists() else 0), time.time()
        return 0, time.time()

    def _log_since(self, mark: tuple[int, float]) -> str:
        """The service's output since ``mark`` (process mode: its log file; systemd: journald)."""
        if isinstance(self.services, ProcessServices):
            try:
                with open(self.services.log_path(self.service), "rb") as f:
                    f.seek(mark[0])
                    return f.read().decode(errors="replace")
            except OSError:
                return ""
        try:
            unit, since = f"{self.service}.service", f"@{int(mark[1])}"
            res = subprocess.run(
                ["journalctl", "-u", unit, "--since", since, "-o", "cat", "--no-pager"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return res.stdout

    def _start_and_wait(self, args: list[str], done: list[Path]) -> None:
        """Start the service with ``args`` and wait until every path of ``done`` exists.
        Raises :class:`DriverError` (with k3s's output, its last line naming why) when k3s
        logs one of :data:`REFUSALS` ("k3s refused this node: <name>: <k3s's message>"), the
        service exits, one of k3s's retry loops (:data:`RETRY_LINES`) goes on for
        :attr:`join_stall_s` seconds (:data:`JOIN_STALL_S`; "k3s join stalled ..."), :meth:`abort` is called, or
        ``timeouts.command_s`` runs out; the service is stopped then. While k3s retries, what
        it waits on is logged every :data:`WAIT_LOG_S` seconds."""
        argv = self._argv(*args)
        shown = [redact(a) for a in argv]
        mark = self._log_mark()
        started = time.monotonic()
        self._runner.clear_abort()
        version = self.cfg.kubernetes.version
        log.info(
            f"starting the {self.service} service",
            extra={"command": " ".join(shown), "k3s": f"{version}+k3s", "embedded_etcd": embedded_etcd(version)},
        )
        try:
            self.services.start(self.service, argv)
        except ServiceError as err:
            raise DriverError(shown, 127, str(err)) from err
        deadline = started + self.cfg.timeouts.command_s
        waiting, waiting_since, said_at = "", started, started
        while True:
            if all(p.exists() for p in done):
                log.info(f"{self.service} is up", extra={"seconds": round(time.monotonic() - started, 3)})
                return
            output = redact(self._log_since(mark))
            verdict = join_verdict(output)
            now = time.monotonic()
            if verdict.waiting != waiting:
                waiting, waiting_since = verdict.waiting, now
            why = ""
            if self._runner.aborted:
                why = "aborted by the agent"
            elif verdict.refusal:
                why = f"k3s refused this node: {verdict.refusal}: {verdict.line}"
            elif not self.services.is_running(self.service):
                why = f"the {self.service} service exited"
            elif waiting and now - waiting_since >= self.join_stall_s:
                why = f"k3s join stalled: retrying for {now - waiting_since:.0f}s: {verdict.line}"
            elif now > deadline:
                why = f"timed out after {self.cfg.timeouts.command_s}s"
            elif waiting and now - said_at >= WAIT_LOG_S:
                said_at = now
                log.info("k3s is retrying", extra={"k3s": verdict.line, "waited_s": round(now - waiting_since, 1)})
            if why:
                self._stop()
                raise DriverError(shown, 1, f"{output}\n{why}")
            time.sleep(self.cfg.timeouts.poll_interval_s)

    def _stop(self) -> None:
        """Stop both k3s services (what k3s-killall.sh does to k3s itself)."""
        for name in ("k3s", "k3s-agent"):
            try:
                self.services.stop(name, timeout_s=10.0)
            except ServiceError as err:
                log.warning(f"cannot stop {name}: {err}")

    def abort(self) -> None:
        """End the running start or command (the call running it raises :class:`DriverError`)."""
        self._runner.abort()

    # -- the interface ----------------------------------------------------------------------
    def new_credentials(self, restore_secret: str | None = None) -> Credentials:
        """A new server token secret (``token``) and agent token secret (``certificate_key``);
        with ``restore_secret`` (the token secret kept with the snapshot to restore) that one
        as the server token: k3s decrypts the snapshot's bootstrap data with it."""
        return Credentials(token=restore_secret or generate_secret(), certificate_key=generate_secret())

    def save_snapshot(self) -> SnapshotTaken:
        """``k3s etcd-snapshot save --node-name N --name ek8s --dir SNAPSHOT_DIR --etcd-server
        https://127.0.0.1:<api_server_port>`` (k3s reads the token from ``server/token``, so
        no secret is on the command line); reads the file k3s names in "Snapshot <file>
        saved." (or the newest ``ek8s-<node>-*``), removes it from the node (the share keeps
        the copies) and returns it with the server token's secret from ``server/token``.
        Raises :class:`DriverError` when k3s fails or the file or token is missing."""
        snapshots = self.cfg.host_path(SNAPSHOT_DIR)
        argv = [self.cfg.kubernetes.k3s, "etcd-snapshot", "save", "--node-name", self.cfg.node.name]
        argv += ["--name", SNAPSHOT_NAME, "--dir", SNAPSHOT_DIR]
        argv += ["--etcd-server", f"https://127.0.0.1:{self.cfg.kubernetes.api_server_port}"]
        if self.cfg.root != Path("/"):
            argv += ["--rootfs", str(self.cfg.root)]
        output = self._runner.run(argv)
        m = _SAVED.search(output)
        pattern = f"{SNAPSHOT_NAME}-{self.cfg.node.name}-*"
        found = [snapshots / m.group(1)] if m else sorted(snapshots.glob(pattern), key=lambda p: p.stat().st_mtime)
        try:
            path = found[-1]
            data = path.read_bytes()
            secret = parse_token(self.cfg.host_path(SERVER_TOKEN).read_text()).secret
        except (IndexError, OSError, ValueError) as err:
            raise DriverError(argv, 1, f"{output}\nno snapshot or server token to read: {err}") from err
        path.unlink(missing_ok=True)
        return SnapshotTaken(data=data, secret=secret, tool="k3s etcd-snapshot save")

    def init(self, credentials: Credentials, restore_from: Path | None = None) -> InitResult:
        """``k3s server`` with ``cluster-init``; returns once k3s wrote k3s.yaml, the server CA
        and the kubelet kubeconfig. With ``restore_from`` (a snapshot file), k3s's documented
        restore first (:meth:`restore_snapshot`); ``credentials.token`` must then be the token
        the snapshot was taken with (k3s refuses any other)."""
        self._write_config(render_init_config(self.cfg, credentials.token, credentials.certificate_key))
        if restore_from is not None:
            self.restore_snapshot(restore_from)
        ca = self.cfg.host_path(SERVER_CA)
        self._start_and_wait(["server"], [self.admin_kubeconfig, ca, self.kubelet_kubeconfig])
        try:
            admin = operator_kubeconfig(self.admin_kubeconfig.read_text(), registration_url(self.cfg))
        except ValueError as err:
            raise DriverError(["k3s", "server"], 1, f"{self.admin_kubeconfig}: {err}") from err
        return InitResult(admin_kubeconfig=admin, ca_cert_pem=ca.read_bytes())

    def restore_snapshot(self, snapshot: Path) -> None:
        """Copy ``snapshot`` into k3s's snapshot directory (0600; k3s reads it from the node,
        not from the share) and run ``k3s server --cluster-reset
        --cluster-reset-restore-path=<copy>`` in the foreground with the config already
        written, as k3s's documentation does it; k3s restores etcd as a one-member cluster,
        writes the cluster's certificates back from the snapshot's bootstrap data and exits 0
        ("... restart without --cluster-reset flag now"). The copy is removed afterwards.
        Raises :class:`DriverError` with k3s's output (e.g. "bootstrap data already found and
        encrypted with different token") or when the snapshot cannot be read."""
        local = f"{SNAPSHOT_DIR}/restore-{snapshot.name}"
        host = self.cfg.host_path(local)
        self._stop()
        try:
            ensure_dir(host.parent)
            write_atomic(host, snapshot.read_bytes())
        except OSError as err:
            raise DriverError(["k3s", "server", "--cluster-reset"], 1, f"cannot copy {snapshot}: {err}") from err
        try:
            self._runner.run(self._argv("server", "--cluster-reset", f"--cluster-reset-restore-path={local}"))
        finally:
            host.unlink(missing_ok=True)
        log.info("etcd restored by k3s --cluster-reset-restore-path", extra={"snapshot": snapshot.name})

    def join_material(self, result: InitResult, credentials: Credentials, generation: int, epoch: int) -> JoinMaterial:
        """Secure server token (``token``) and agent token (``certificate_key``), both pinning
        the CA; k3s's tokens do not expire (:data:`NEVER_S`)."""
        now = time.time()
        ca = result.ca_cert_pem
        return JoinMaterial(
            generation=generation,
            epoch=epoch,
            api_server_endpoint=f"{self.cfg.vip.hostname}:{self.cfg.vip.port}",
            token=secure_token(ca, "server", credentials.token),
            token_expires_at=now + NEVER_S,
            ca_cert_hashes=[f"sha256:{ca_hash(ca)}"],
            certificate_key=secure_token(ca, "node", credentials.certificate_key),
            certificate_key_expires_at=now + NEVER_S,
            ca_cert=ca.decode(),
            published_by=self.cfg.node.name,
        )

    def join(self, material: JoinMaterial) -> None:
        """``k3s server`` (control nodes: adds this node's etcd member) or ``k3s agent``
        against the VIP; returns once the kubelet kubeconfig (and on servers k3s.yaml) exist."""
        try:
            text = render_join_config(self.cfg, material)
        except ValueError as err:
            raise DriverError(["k3s"], 2, f"join material: {err}") from err
        self._write_config(text)
        if self.cfg.is_control:
            self._start_and_wait(["server"], [self.admin_kubeconfig, self.kubelet_kubeconfig])
        else:
            self._start_and_wait(["agent"], [self.kubelet_kubeconfig])

    def renew_join_material(
        self, material: JoinMaterial, parts: tuple[str, ...] = ("token", "certificate_key")
    ) -> tuple[JoinMaterial, list[str]]:
        """Nothing expires in k3s's join material: returns ``(material, [])`` whatever ``parts``."""
        return material, []

    def reset(self, whole_cluster: bool = False) -> None:
        """What k3s-killall.sh and k3s-uninstall.sh do to k3s's own state (:meth:`killall`),
        then remove :data:`RESET_PATHS` but the airgap images in :data:`AIRGAP_IMAGES`; the
        etcd member stays in the cluster for Phylactery's prune (k3s's uninstall does not
        remove it either). ``whole_cluster`` changes nothing here."""
        self.killall()
        keep = self.cfg.host_path(AIRGAP_IMAGES)
        for path in (*RESET_PATHS, "/var/lib/cni"):
            _remove_except(self.cfg.host_path(path), keep)

    def killall(self) -> None:
        """k3s-killall.sh on this node: stop both k3s services, SIGKILL every process tree of
        a ``<data-dir>/data/<hash>/bin/containerd-shim`` (the pods' shims outlive k3s), unmount
        and remove the mounts under :data:`KILLALL_MOUNTS` (in node.yaml's ``root``). Only on
        a node whose ``root`` is ``/`` (a real node, or a lab machine in its own network
        namespace) the network part too: the CNI namespaces (``ip netns`` ``cni-*``), the
        veths of ``cni0`` and :data:`CNI_INTERFACES`, and the iptables rules of
        :func:`iptables_without_k8s`. A lab node in process mode (``root`` elsewhere) shares the
        machine's ``ip netns`` list and iptables with the lab itself, which this must never
        touch; its emulated k3s makes no interface or rule anyway. Never raises: what cannot be
        undone is logged."""
        self._stop()
        self._kill_shims()
        prefixes = [str(self.cfg.host_path(p)) if p != "/run/netns/cni-" else "" for p in KILLALL_MOUNTS]
        if self.cfg.root == Path("/"):
            prefixes[-1] = "/run/netns/cni-"
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            mounts = ""
        for point in mounts_under(mounts, [p for p in prefixes if p]):
            res = subprocess.run(["umount", point], capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                log.warning(f"cannot unmount {point}: {res.stderr.strip()}")
                continue
            shutil.rmtree(point, ignore_errors=True)
        if self.cfg.root == Path("/"):
            self._remove_cni_network()

    def _kill_shims(self) -> None:
        """SIGKILL the process trees of k3s's containerd-shims (k3s-killall.sh's ``killtree``)."""
        import psutil

        data = str(self.cfg.host_path(DATA_DIR))
        for proc in psutil.process_iter(["cmdline"]):
            argv0 = (proc.info.get("cmdline") or [""])[0]
            if not argv0.startswith(data) or not _SHIM.search(argv0):
                continue
            try:
                for p in [*proc.children(recursive=True), proc]:
                    p.kill()
            except psutil.Error as err:
                log.warning(f"cannot kill containerd-shim {proc.pid}: {err}")

    def _remove_cni_network(self) -> None:
        """The network half of k3s-killall.sh (see :meth:`killall`): CNI namespaces, the
        interfaces, the iptables rules; every step skipped when its tool is missing."""

        def run(*argv: str, stdin: str | None = None) -> str:
            try:
                res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as err:
                log.warning(f"{' '.join(argv)}: {err}")
                return ""
            return res.stdout

        if shutil.which("ip"):
            for line in run("ip", "netns", "list").splitlines():
                name = line.split()[0] if line.split() else ""
                if name.startswith("cni-"):
                    run("ip", "netns", "delete", name)
            for line in run("ip", "-o", "link", "show").splitlines():
                if "master cni0" in line:
                    run("ip", "link", "delete", line.split(":")[1].strip().split("@")[0])
            for iface in CNI_INTERFACES:
                run("ip", "link", "delete", iface)
        for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
            if shutil.which(save) and shutil.which(restore):
                saved = run(save)
                if saved:
                    run(restore, stdin=iptables_without_k8s(saved))

    def reform_etcd(self, timeout_s: float = 120.0) -> None:
        """``k3s server --cluster-reset`` (k3s exits once etcd runs as a one-member cluster),
        then the service again without it, waiting until the member has quorum alone. Raises
        :class:`DriverError`."""
        from core.etcd import EtcdError, wait_single_member_quorum

        self._stop()
        self._runner.run(self._argv("server", "--cluster-reset"))
        self._start_and_wait(["server"], [self.admin_kubeconfig])
        ctx = self.etcd_client_context()
        if ctx is None:
            raise DriverError(["reform-etcd"], 1, "no etcd client certificate on this node")
        try:
            view = wait_single_member_quorum(self.etcd_endpoint, ctx, timeout_s)
        except EtcdError as err:
            raise DriverError(["reform-etcd"], 1, str(err)) from err
        log.info("etcd re-formed by k3s --cluster-reset", extra={"raft_index": view.raft_index})
