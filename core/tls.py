"""Phylactery's TLS: a small CA of the cluster's own, and what servers and clients build from it.

Bearer credentials must never cross the provisioning network in clear text (docs/security.md),
so Phylactery speaks HTTPS only, and every client verifies the server against this CA:

* the **CA** is made once, at the first Phylactery start of a cluster (or by ``ek8s
  credentials rotate`` on a share that has none), by :meth:`core.share.ShareStore.ensure_credentials`:
  an ECDSA P-256 key pair, self-signed, valid :data:`CA_VALIDITY`. Its key stays in the
  control-only tree (control nodes and the Warewulf server read it); its certificate is copied
  into the node tree for workers;
* each **Phylactery** issues itself a server certificate from that CA every time it starts
  (:func:`issue_server_certificate`, valid :data:`SERVER_VALIDITY`), for its node address (an
  IP address SAN: clients connect to ``https://<address>:<port>``, the member record's URL)
  and its node name (a DNS SAN: Prometheus scrapes ``control0:9999``). The key lives in the
  node's RAM root only;
* **clients** build :func:`client_context` from the CA certificate: the default verification
  (chain to the CA, validity, hostname or IP address against the SANs, RFC 6125 / Python's
  ``ssl.match_hostname`` rules for IP addresses).

Why a CA rather than pinned self-signed pairs: one trust anchor for every client, whatever
member records say (a record on the share is not proof of anything: the node tree is writable
by every worker), a server certificate that each Phylactery renews by itself at each start,
and a node's address that another machine takes later cannot present a certificate for it
without the CA key, which only control nodes can read.

Formats: X.509 v3 (RFC 5280) with ``cryptography``'s builder; keys PKCS#8 PEM, unencrypted
(the files are ``0600`` and the server key never leaves the node's RAM).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=397)  # the longest a public CA may issue (CA/B Forum); renewed at each start
CLOCK_SKEW = dt.timedelta(minutes=5)  # not-before this far back: nodes' clocks differ a little

Pair = tuple[bytes, bytes]  # (certificate PEM, private key PEM)


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(cluster: str) -> Pair:
    """A new self-signed CA for ``cluster`` (CN ``ek8s phylactery CA <cluster>``), ECDSA P-256,
    ``CA_VALIDITY`` (10 years), ``BasicConstraints(ca=True, path_length=0)``: it signs server
    certificates only. Returns PEM bytes (certificate, PKCS#8 key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ek8s phylactery CA {cluster}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_server_certificate(ca: Pair, node: str, address: str, validity: dt.timedelta = SERVER_VALIDITY) -> Pair:
    """A server certificate for Phylactery on ``node`` at ``address`` (an IP address string),
    signed by ``ca`` (PEM certificate and key): SANs ``IP:<address>`` and ``DNS:<node>``,
    ``serverAuth`` only, ECDSA P-256, ``validity`` from now. Raises ``ValueError`` when
    ``address`` is not an IP address or the CA does not parse."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ip = ipaddress.ip_address(address)
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    ca_key = serialization.load_pem_private_key(ca[1], password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the Phylactery CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"phylactery {node}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip), x509.DNSName(node)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The server side: TLS 1.2 at least, the certificate chain from ``certfile`` and
    ``keyfile`` (paths; ``ssl.SSLContext.load_cert_chain`` takes files only). Raises
    ``OSError`` or ``ssl.SSLError`` when they cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    """The client side: trust only ``ca_pem`` (the Phylactery CA certificate), verify the
    chain and the server's name or IP address against its SANs (``check_hostname``), TLS 1.2
    at least. Raises ``ssl.SSLError`` when ``ca_pem`` is no certificate."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def is_https(url: str) -> bool:
    """Whether ``url`` is ``https://...``: the only scheme a bearer credential is sent to."""
    return url.lower().startswith("https://")


class TrustedCA:
    """A client context for the Phylactery CA, made from ``load()`` (the CA certificate's
    PEM bytes, read from the share) on first use and kept; :meth:`forget` makes the next use
    read it again (after a verification failure: the CA may have been replaced). ``load`` may
    raise ``OSError`` (no CA yet), which :meth:`context` lets through."""

    def __init__(self, load: Callable[[], bytes]) -> None:
        self._load = load
        self._ctx: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        """The client context (:func:`client_context`). Raises ``OSError`` (``ssl.SSLError``
        is one) when the CA cannot be read or is no certificate."""
        if self._ctx is None:
            self._ctx = client_context(self._load())
        return self._ctx

    def forget(self) -> None:
        """Read the CA again at the next :meth:`context`."""
        self._ctx = None
