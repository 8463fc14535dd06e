"""The emulator's CA and server certificate.

Whoever trusts the CA trusts anything its key signs, and the key sits in the state directory. So
the CA carries critical X.509 Name Constraints (only the names the HTTPS listener serves) and lives
for CA_VALIDITY: a leaked key cannot vouch for any other site, nor for long. It is kept in the state
directory and reused while usable (so clients keep trusting one CA), replaced otherwise. The server
certificate is issued fresh at every start.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from azure_emulator.clouds import TLS_NAMES

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CHAIN = "server-key-and-chain.pem"

CA_VALIDITY = dt.timedelta(days=30)
SERVER_VALIDITY = dt.timedelta(days=7)  # a CA with less left than this is replaced, so the leaf fits in it
CLOCK_SKEW = dt.timedelta(hours=1)  # certificates start this early, for clients whose clock lags
ORGANIZATION = "Azure emulator (development only)"

SERVER_DNS_NAMES = (*TLS_NAMES, "localhost")
SERVER_ADDRESSES = (ipaddress.ip_address("127.0.0.1"),)
# A DNS constraint admits the name and every name below it, so "vault.azure.net" covers the wildcard.
PERMITTED_SUBTREES = (
    *(x509.DNSName(name.removeprefix("*.")) for name in SERVER_DNS_NAMES),
    x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
)


class CA:
    """A CA certificate and its private key."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, now: dt.datetime) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        not_before = now - CLOCK_SKEW
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                # A distinct name per CA tells a renewed CA from its predecessor.
                x509.NameAttribute(NameOID.COMMON_NAME, f"Azure emulator CA {now:%Y-%m-%dT%H:%M:%SZ}"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(
                x509.NameConstraints(permitted_subtrees=PERMITTED_SUBTREES, excluded_subtrees=None),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def unusable_reason(self, now: dt.datetime) -> str | None:
        """Why this CA must be replaced, or None if it can sign today's server certificate."""
        cert = self.cert
        if cert.public_key() != self.key.public_key():
            return "its key does not match its certificate"
        if now < cert.not_valid_before_utc:
            return "it is not valid yet"
        remaining = cert.not_valid_after_utc - now
        if remaining < SERVER_VALIDITY:  # the server certificate would outlive it
            return (
                "it has expired" if remaining <= dt.timedelta(0) else f"it expires within {SERVER_VALIDITY.days} days"
            )
        if cert.not_valid_after_utc - cert.not_valid_before_utc > CA_VALIDITY:
            return f"it is valid for more than {CA_VALIDITY.days} days"
        try:
            constraints = cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            return "it has no name constraints"
        value = constraints.value
        if (
            not constraints.critical
            or value.excluded_subtrees
            or set(value.permitted_subtrees or ()) != set(PERMITTED_SUBTREES)
        ):
            return "its name constraints are not exactly the names served"
        return None

    def issue_server_chain(self, now: dt.datetime) -> bytes:
        """PEM: a new server key, its certificate for every served name, then the CA certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        # Within the CA's validity, even if the clock moved back since the CA was made.
        not_before = max(now - CLOCK_SKEW, self.cert.not_valid_before_utc)
        not_after = min(not_before + SERVER_VALIDITY, self.cert.not_valid_after_utc)
        alt_names = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
        alt_names += [x509.IPAddress(address) for address in SERVER_ADDRESSES]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem()

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_ca(state_dir: Path, now: dt.datetime) -> CA:
    """The CA kept in state_dir if still usable; else a new one, written there."""
    cert_path, key_path = state_dir / CA_CERT, state_dir / CA_KEY
    if cert_path.exists() or key_path.exists():
        try:
            stored = _read_ca(cert_path, key_path)
            reason = stored.unusable_reason(now)
        except (OSError, ValueError, TypeError) as exc:  # half missing, unreadable PEM, not an EC key
            reason = f"cannot read it: {exc}"
        if reason is None:
            return stored
        sys.stderr.write(
            f"azure-emulator: new CA in {state_dir}: the one there cannot be used ({reason}); "
            "clients must trust the new ca.pem\n"
        )
    ca = CA.create(now)
    _write_private(key_path, _key_pem(ca.key))
    cert_path.write_bytes(ca.cert_pem())
    return ca


def server_context(state_dir: Path) -> tuple[ssl.SSLContext, Path]:
    """A server SSLContext for every emulated host (plus localhost and 127.0.0.1), and the CA path."""
    now = dt.datetime.now(dt.timezone.utc)
    ca = load_or_create_ca(state_dir, now)
    chain_path = state_dir / SERVER_CHAIN
    _write_private(chain_path, ca.issue_server_chain(now))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain_path)
    return context, state_dir / CA_CERT


def copy_ca(ca_path: Path, destination: str) -> None:
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_path, destination)


def _read_ca(cert_path: Path, key_path: Path) -> CA:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{key_path.name} holds a {type(key).__name__}, not an EC key")
    return CA(cert, key)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode above applies only to a new file; a replaced one may be looser
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
