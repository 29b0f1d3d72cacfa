"""EMULATED kubeadm's certificates and credentials (lab only): the node certificates a
control-plane node makes for itself, the ``kubeadm-certs`` Secret, bootstrap tokens and the
kubelet's TLS bootstrap. Paths are under ``cmd/kubeadm/app/`` in kubernetes/kubernetes; the
formats did not change between 1.32 and 1.36.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from typing import Any

from core.fileperm import ensure_dir, write_atomic
from core.joinmaterial import TOKEN_RE
from lab import pki
from lab.kubeadm.config import token_ttl_s
from lab.kubeadm.workflow import KubeadmError, say
from lab.nodekit import Api, Root

# KubernetesAPICallTimeout (constants.go, 1 min): kubeadm's writes through the endpoint retry
# errors for that long; one may reach an API server of the generation being torn down (its
# TLS fails) until HAProxy drops it.
API_CALL_S = 60.0
CERTS_TTL_S = 7200.0  # the kubeadm-certs Secret's lifetime (constants.go: DefaultCertTokenDuration, 2 h)
CERT_FILES = [
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
]


def node_certs(r: Root, name: str, address: str, cluster: dict[str, Any], ca: pki.Pair, etcd_ca: pki.Pair) -> None:
    """apiserver, etcd server/peer, etcd clients: what each control-plane node makes itself
    (``phases/certs/certlist.go``). SANs as ``util/pkiutil/pki_helpers.go`` gives them: the
    apiserver's node name, ``kubernetes.default.svc...``, the first service IP, ``address``
    (an IPv4 string), the endpoint's host and ``certSANs``; etcd's node name, ``localhost``,
    ``address`` and ``127.0.0.1`` (kubeadm also adds ``::1``). Raises ``KeyError`` when
    ``cluster`` (a ClusterConfiguration dict) lacks ``controlPlaneEndpoint`` or
    ``networking.serviceSubnet``, ``OSError`` on write."""
    endpoint_host = cluster["controlPlaneEndpoint"].rsplit(":", 1)[0]
    service_ip = str(next(ipaddress.IPv4Network(cluster["networking"]["serviceSubnet"]).hosts()))
    sans = [*cluster.get("apiServer", {}).get("certSANs", []), endpoint_host]
    ips = (*(s for s in sans if _is_ip(s)), address, service_ip)
    dns = (name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    dns += tuple(s for s in sans if not _is_ip(s))
    pki.write_pair(r.pki, "apiserver", pki.issue(ca, "kube-apiserver", dns=dns, ips=ips, server=True))
    pki.write_pair(r.pki, "apiserver-etcd-client", pki.issue(etcd_ca, "kube-apiserver-etcd-client", client=True))
    etcd_dir = r.pki / "etcd"
    both = {"dns": (name, "localhost"), "ips": (address, "127.0.0.1"), "server": True, "client": True}
    pki.write_pair(etcd_dir, "server", pki.issue(etcd_ca, name, **both))  # type: ignore[arg-type]
    pki.write_pair(etcd_dir, "peer", pki.issue(etcd_ca, name, **both))  # type: ignore[arg-type]
    pki.write_pair(etcd_dir, "healthcheck-client", pki.issue(etcd_ca, "kube-etcd-healthcheck-client", client=True))


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def b64(b: bytes | str) -> str:
    """Base64 of ``b`` (text is UTF-8 encoded first), as a Secret's ``data`` holds it."""
    return base64.b64encode(b.encode() if isinstance(b, str) else b).decode()


def expect(code: int, body: Any, what: str, ok: tuple[int, ...]) -> None:
    """Raise :class:`KubeadmError` ``<what>: HTTP <code>: <message>`` unless ``code`` is in ``ok``."""
    if code not in ok:
        msg = body.get("message") if isinstance(body, dict) else body
        raise KubeadmError(f"{what}: HTTP {code}: {msg}")


def upload_certificates(r: Root, api: Api, certificate_key: str, ttl_s: float = CERTS_TTL_S) -> None:
    """The ``kubeadm-certs`` Secret: each of ``CERT_FILES`` sealed with ``certificate_key``
    (:func:`lab.pki.seal`), keys with ``/`` turned to ``-`` (``copycerts.go``). kubeadm
    gives it an owner reference to a 2 h token so that it goes with the token; here it
    carries an ``ek8s.lab/expires-at`` annotation ``ttl_s`` seconds ahead (2 h; ``kubeadm
    init`` passes the emulation's ``certs_ttl_s``). Raises
    :class:`KubeadmError` unless the API answers 200 or 201, ``OSError`` for a missing file."""
    data = {f.replace("/", "-"): b64(pki.seal(certificate_key, (r.pki / f).read_bytes())) for f in CERT_FILES}
    secret = {
        "metadata": {
            "name": "kubeadm-certs",
            "annotations": {"ek8s.lab/expires-at": str(time.time() + ttl_s)},
        },
        "type": "Opaque",
        "data": data,
    }
    code, body = api.wait("PUT", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs", secret, API_CALL_S)
    expect(code, body, "[upload-certs] kubeadm-certs", (200, 201))
    say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')


def create_token(api: Api, token: str, ttl: str) -> None:
    """The ``bootstrap-token-<id>`` Secret for ``token`` (``<id>.<secret>``) as kubeadm writes
    it (``apis/bootstraptoken/v1/utils.go``; format in ``k8s.io/cluster-bootstrap/token/api``):
    usable for authentication and signing, extra group
    ``system:bootstrappers:kubeadm:default-node-token``, ``expiration`` in RFC 3339. ``ttl``
    is a Go duration (``24h0m0s``, ``86400s``; ``kubeadm init`` passes the emulation's
    ``token_ttl_s`` when set). Raises
    :class:`KubeadmError` for a malformed token or ttl, or when the API refuses the Secret."""
    m = TOKEN_RE.match(token)
    if not m:
        raise KubeadmError(
            f'[bootstrap-token] the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    seconds = token_ttl_s(ttl)
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
    secret = {
        "metadata": {"name": f"bootstrap-token-{m.group(1)}"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "token-id": b64(m.group(1)),
            "token-secret": b64(m.group(2)),
            "expiration": b64(expiration),
            "usage-bootstrap-authentication": b64("true"),
            "usage-bootstrap-signing": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token"),
        },
    }
    path = f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{m.group(1)}"
    code, body = api.wait("PUT", path, secret, API_CALL_S)
    expect(code, body, "[bootstrap-token] token secret", (200, 201))
    say(f"[bootstrap-token] Created bootstrap token {m.group(1)} (expires {expiration})")


KUBELET_RESTART_S = 10.0  # kubelet.service's RestartSec in the Kubernetes packages
KUBELET_BOOTSTRAP_S = 240.0  # kubeadm's wait for the kubelet (KubeletHealthCheckTimeout, 4 min)


def tls_bootstrap(boot: Api, name: str) -> pki.Pair:
    """The kubelet's TLS bootstrap, done by kubeadm here: a CSR for ``system:node:<name>``
    with the bootstrap token, signed at once by the emulated API server (the CSR approver and
    signer). Returns the (certificate, key) PEM pair. Raises :class:`KubeadmError` for an
    answer other than 201 and ``OSError`` when no answer came within kubeadm's 4 min wait.

    On a real node the kubelet makes this request and exits when it gets no answer
    (``certificate/csr`` ``RequestCertificate`` returns the error, the kubelet's start
    fails); systemd starts it again :data:`KUBELET_RESTART_S` later and it asks again, while
    kubeadm waits up to :data:`KUBELET_BOOTSTRAP_S` for it. So a request that got no answer
    (a busy API server, HAProxy closing the connection) is made again 10 s later here too
    instead of failing the join."""
    csr_pem, key = pki.new_csr(f"system:node:{name}", ("system:nodes",))
    request = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "csr-"},
        "spec": {
            "request": b64(csr_pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    }
    deadline = time.monotonic() + KUBELET_BOOTSTRAP_S
    while True:
        try:
            code, body = boot.call("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", request)
            break
        except OSError as err:
            if time.monotonic() + KUBELET_RESTART_S >= deadline:
                raise
            say(f"[kubelet-start] the kubelet's TLS bootstrap got no answer ({err}); it starts again in 10 s")
            time.sleep(KUBELET_RESTART_S)
    expect(code, body, "[kubelet-start] TLS bootstrap", (201,))
    say("[kubelet-start] TLS bootstrap: the kubelet client certificate was signed")
    return base64.b64decode(body["status"]["certificate"]), key


def download_certs(r: Root, api: Api, certificate_key: str) -> None:
    """Fetch ``kubeadm-certs`` with the bootstrap token and write each file, unsealed with
    ``certificate_key``, under the node's pki directory (``copycerts.go``, ``DownloadCerts``).
    Raises :class:`KubeadmError` when the Secret is gone (expired) or the key does not open
    it, with kubeadm's messages."""
    code, secret = api.call("GET", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
    if code == 404:
        raise KubeadmError(
            'error downloading certs: error downloading the secret: secret "kubeadm-certs" was not found in the '
            '"kube-system" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs '
            "--upload-certs` on a control plane to generate a new one"
        )
    expect(code, secret, "[download-certs]", (200,))
    from cryptography.exceptions import InvalidTag

    for f in CERT_FILES:
        try:
            data = pki.unseal(certificate_key, base64.b64decode(secret["data"][f.replace("/", "-")]))
        except (InvalidTag, ValueError) as err:
            raise KubeadmError(
                "error downloading certs: error decoding secret data with provided key: "
                "cipher: message authentication failed"
            ) from err
        path = r.pki / f
        ensure_dir(path.parent)
        write_atomic(path, data)
    say('[download-certs] Downloaded the certificates from Secret "kubeadm-certs"')
