"""Certificates for the emulated control plane (lab only), in kubeadm's file layout.

ECDSA P-256 keys (what ``encryptionAlgorithm: ECDSA-P256`` gives with real kubeadm), X.509
certificates signed with ``cryptography``, kubeconfigs with embedded data, and the
AES-256-GCM sealing kubeadm applies to the ``kubeadm-certs`` Secret (random 12-byte nonce
prepended to the ciphertext, key = the hex-decoded certificate key), and the detached JWS the
bootstrap signer writes into ``cluster-info`` (the emulated API server signs with it, the
emulated kubeadm's discovery checks it without importing the API server).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.fileperm import ensure_dir, write_atomic

Pair = tuple[bytes, bytes]  # (certificate PEM, private key PEM)

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def new_ca(cn: str) -> Pair:
    """A self-signed CA named ``cn`` (kubeadm's are ``kubernetes``, ``etcd-ca`` and
    ``front-proxy-ca``), valid 10 years as kubeadm's (``CA_VALIDITY``). Returns PEM bytes."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue(
    ca: Pair,
    cn: str,
    *,
    orgs: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
    public_key: ec.EllipticCurvePublicKey | None = None,
) -> Pair:
    """A leaf certificate for ``cn`` (organisations ``orgs``: Kubernetes reads them as groups)
    signed by ``ca``, valid 1 year as kubeadm's (``LEAF_VALIDITY``), with DNS and IP address
    SANs (``ips`` are address strings) and the server and/or client auth extended key usage.
    Returns PEM bytes; with ``public_key`` (from a CSR) no key is made and the returned key PEM
    is empty. Raises ``ValueError`` for a string in ``ips`` that is not an address."""
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    ca_key = serialization.load_pem_private_key(ca[1], None)
    key = None if public_key is not None else _key()
    pub = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM), (_key_pem(key) if key else b"")


def new_csr(cn: str, orgs: tuple[str, ...]) -> tuple[bytes, bytes]:
    """(CSR PEM, key PEM): what a kubelet sends during TLS bootstrap."""
    key = _key()
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn, orgs)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def sa_keypair() -> Pair:
    """(``sa.pub``, ``sa.key``): the service-account signing key pair."""
    key = _key()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub, _key_pem(key)


def write_pair(directory: Path, name: str, pair: Pair) -> None:
    """``<name>.crt`` and ``<name>.key`` at 0600 in ``directory`` (0700), written atomically;
    no ``.key`` when the key PEM is empty. Raises ``OSError``."""
    ensure_dir(directory)
    write_atomic(directory / f"{name}.crt", pair[0])
    if pair[1]:
        write_atomic(directory / f"{name}.key", pair[1])


def read_pair(directory: Path, name: str) -> Pair:
    """``<name>.crt`` and ``<name>.key`` from ``directory`` (PEM bytes). Raises ``OSError``."""
    return (directory / f"{name}.crt").read_bytes(), (directory / f"{name}.key").read_bytes()


def kubeconfig(server: str, ca_pem: bytes, cert: Pair, user: str, cluster: str) -> bytes:
    """A kubeconfig (``clientcmd`` v1, as YAML bytes) with embedded certificate data: one
    cluster (``server`` is an ``https://host:port`` URL), one user, context ``user@cluster``,
    as kubeadm writes ``admin.conf`` and ``kubelet.conf``."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert[0]), "client-key-data": b64(cert[1])}}],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def parse_kubeconfig(data: bytes) -> tuple[str, bytes, Pair]:
    """(server URL, CA PEM, (client cert PEM, client key PEM)) of the first cluster and user
    of a kubeconfig like :func:`kubeconfig`'s; the pair is empty bytes for a user without
    certificate data. Raises ``KeyError``, ``IndexError``, ``TypeError`` or ``ValueError``
    (bad base64) on another shape, ``yaml.YAMLError`` when it is not YAML."""
    doc = yaml.safe_load(data)
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]["user"]
    d = base64.b64decode
    return (
        cluster["server"],
        d(cluster["certificate-authority-data"]),
        (d(user.get("client-certificate-data", "")), d(user.get("client-key-data", ""))),
    )


def seal(certificate_key: str, data: bytes) -> bytes:
    """AES-256-GCM with a random nonce prepended, as kubeadm seals each ``kubeadm-certs``
    entry (``cmd/kubeadm/app/util/crypto/crypto.go``, ``EncryptBytes``). ``certificate_key``
    is hex (kubeadm's: 64 digits, AES-256); raises ``ValueError`` when it is not hex or not
    16, 24 or 32 bytes."""
    nonce = os.urandom(12)
    return nonce + AESGCM(bytes.fromhex(certificate_key)).encrypt(nonce, data, None)


def unseal(certificate_key: str, blob: bytes) -> bytes:
    """Inverse of :func:`seal`; raises ``cryptography.exceptions.InvalidTag`` on a wrong key
    or altered data, ``ValueError`` on a key :func:`seal` would refuse."""
    return AESGCM(bytes.fromhex(certificate_key)).decrypt(blob[:12], blob[12:], None)


def jws_signature(token_id: str, token_secret: str, payload: bytes) -> str:
    """Detached JWS (HS256, ``kid`` the token id) over ``payload`` keyed by the token secret,
    as the bootstrap signer writes into ``cluster-info`` as ``jws-kubeconfig-<token id>``
    (``pkg/controller/bootstrap/bootstrapsigner.go``, ``k8s.io/cluster-bootstrap/token/jws``
    ``ComputeDetachedSignature``). Returns ``header..signature`` (base64url, no padding)."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": token_id}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    sig = hmac.new(token_secret.encode(), header + b"." + body, hashlib.sha256).digest()
    return (header + b".." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()
