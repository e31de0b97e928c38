"""The PKI of the local control plane, made with ``cryptography``.

Modelled on controller-runtime's envtest: one CA signs the API server's serving
certificate and an admin client certificate in ``system:masters``; an RSA key pair
signs and verifies service-account tokens. Files are PEM, private keys mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a `kurable dev` state directory kept for months; renewed below
# when less than RENEW_BEFORE remains.
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)
# Clocks of containers and VMs drift; backdating avoids "certificate not yet valid".
BACKDATE = datetime.timedelta(hours=1)

ADMIN_USER = "kurable-admin"
ADMIN_GROUP = "system:masters"

# Names clients may use for the API server: the loopback address, and the in-cluster
# names plus the first address of the service range (10.0.0.0/24) for completeness.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", "10.0.0.1")


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files of one control plane's PKI."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def files(self) -> tuple[Path, ...]:
        return (
            self.ca_cert,
            self.ca_key,
            self.serving_cert,
            self.serving_key,
            self.admin_cert,
            self.admin_key,
            self.service_account_key,
            self.service_account_pub,
        )


def ensure_pki(directory: Path) -> PKI:
    """Return the PKI in ``directory``, generating it if any file is missing or a
    certificate is about to expire (an existing, valid PKI is reused unchanged so that
    kubeconfigs and tokens issued earlier keep working)."""
    pki = PKI(directory)
    if not _is_usable(pki):
        _generate(pki)
    return pki


def _is_usable(pki: PKI) -> bool:
    if not all(path.is_file() for path in pki.files()):
        return False
    deadline = datetime.datetime.now(datetime.UTC) + RENEW_BEFORE
    for path in (pki.ca_cert, pki.serving_cert, pki.admin_cert):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            return False
        if cert.not_valid_after_utc < deadline:
            return False
    return True


def _generate(pki: PKI) -> None:
    pki.directory.mkdir(parents=True, exist_ok=True)
    # Remove the old certificates first: _is_usable() requires them, so a generation
    # interrupted half-way is redone instead of pairing new keys with old certificates.
    for path in (pki.ca_cert, pki.serving_cert, pki.admin_cert):
        path.unlink(missing_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    # EC P-256 for the TLS keys: generated in microseconds where RSA takes tens of
    # milliseconds, and accepted by Go's TLS stack, kubectl and Python's ssl.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kurable-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = (
        _leaf_builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ca_cert,
            ca_key,
            serving_key,
            now,
            ExtendedKeyUsageOID.SERVER_AUTH,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in SERVING_DNS_NAMES]
                + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    # The API server maps CN to the user name and O to the groups; system:masters
    # bypasses RBAC, which is what an admin kubeconfig is for.
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin_cert = _leaf_builder(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        ),
        ca_cert,
        ca_key,
        admin_key,
        now,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ).sign(ca_key, hashes.SHA256())

    # Service-account tokens are RS256 JWTs by convention (and what most verifiers
    # of projected tokens expect), hence RSA here.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # The certificates are written last, for the same reason.
    _write_key(pki.ca_key, ca_key)
    _write_key(pki.serving_key, serving_key)
    _write_key(pki.admin_key, admin_key)
    _write_key(pki.service_account_key, sa_key)
    _write(
        pki.service_account_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_cert, serving_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.admin_cert, admin_cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


def _leaf_builder(
    subject: x509.Name,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    return (
        _builder(subject, ca_cert.subject, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, mode=0o600)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    # Write to a temporary name and rename, so a reader never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
