"""Join credentials in kubeadm's formats, checked against tools that do not share our code."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from core.joinmaterial import TOKEN_RE, ca_cert_hash, generate_certificate_key, generate_token


def self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    import datetime as dt

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def openssl_pin(pem: Path) -> str:
    """kubeadm's documented recipe for the discovery hash (kubeadm join reference):
    openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum."""
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(pem)], capture_output=True, check=True, timeout=30
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.stdout, capture_output=True, check=True, timeout=30
    )
    return "sha256:" + hashlib.sha256(der.stdout).hexdigest()


@pytest.mark.parametrize("kind", ["ecdsa-p256", "rsa-2048"])
def test_ca_pin_matches_openssl(tmp_path: Path, kind: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa-p256" else rsa.generate_private_key(65537, 2048)
    pem = self_signed(key)
    (tmp_path / "ca.crt").write_bytes(pem)
    assert ca_cert_hash(pem) == openssl_pin(tmp_path / "ca.crt")


def test_ca_pin_differs_for_another_ca(tmp_path: Path) -> None:
    a, b = self_signed(ec.generate_private_key(ec.SECP256R1())), self_signed(ec.generate_private_key(ec.SECP256R1()))
    assert ca_cert_hash(a) != ca_cert_hash(b)


def test_ca_pin_refuses_what_is_not_a_certificate() -> None:
    with pytest.raises(ValueError):
        ca_cert_hash(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")


def test_generated_token_and_certificate_key_formats() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50 and all(TOKEN_RE.match(t) for t in tokens)
    key = generate_certificate_key()
    assert len(key) == 64 and bytes.fromhex(key)
