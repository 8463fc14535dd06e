"""The emulator's CA: constrained to the names it serves, short-lived, replaced when unusable."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
from pathlib import Path

import pytest
from azure_emulator.launcher import EmulatorProcess
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_MAX_VALIDITY = dt.timedelta(days=30)
SERVER_MAX_VALIDITY = dt.timedelta(days=7)
PERMITTED_DNS = {
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "management.azure.com",
    "management.chinacloudapi.cn",
    "management.usgovcloudapi.net",
    "login.microsoftonline.com",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
    "localhost",
}
PERMITTED_IP = {ipaddress.ip_network("127.0.0.0/8")}
SERVED_HOSTS = ["contoso-kv.vault.azure.net", "kv.vault.azure.cn", "management.usgovcloudapi.net", "localhost"]


def read_ca(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def server_certificate(emulator: EmulatorProcess, host: str) -> x509.Certificate:
    """The certificate the HTTPS listener presents for host, verified against the emulator's CA only."""
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    with (
        socket.create_connection(("127.0.0.1", emulator.https_port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def validity(cert: x509.Certificate) -> dt.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def write_ca(
    state_dir: Path, not_before: dt.datetime, not_after: dt.datetime, constraints: x509.NameConstraints | None
) -> bytes:
    """A CA in state_dir as an earlier run (or an earlier version) would have left it; its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old emulator CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    cert_pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "ca.pem").write_bytes(cert_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (state_dir / "ca-key.pem").write_bytes(key_pem)
    return cert_pem


def write_leaf(ca_dir: Path, names: list[str], out: Path) -> None:
    """A server key and chain for names, signed with the CA key in ca_dir (what a leaked key allows)."""
    ca_cert = read_ca(ca_dir / "ca.pem")
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test leaf")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))


def handshake(server_chain: Path, cafile: str, hostname: str) -> None:
    """A TLS handshake in memory between a server presenting server_chain and a client trusting only cafile."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server_chain)
    client_context = ssl.create_default_context(cafile=cafile)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):  # a TLS handshake takes two round trips; bounded instead of timed
        try:
            client.do_handshake()
            return
        except ssl.SSLWantReadError:
            pass
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
    raise AssertionError("the in-memory TLS handshake did not finish")


def test_ca_has_critical_name_constraints_for_the_served_names_only(emulator):
    extension = read_ca(emulator.ca_bundle).extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.critical
    permitted = extension.value.permitted_subtrees
    assert {name.value for name in permitted if isinstance(name, x509.DNSName)} == PERMITTED_DNS
    assert {name.value for name in permitted if isinstance(name, x509.IPAddress)} == PERMITTED_IP
    assert all(isinstance(name, (x509.DNSName, x509.IPAddress)) for name in permitted)
    assert not extension.value.excluded_subtrees


def test_ca_is_short_lived_and_the_server_certificate_lies_within_it(emulator):
    ca = read_ca(emulator.ca_bundle)
    assert validity(ca) <= CA_MAX_VALIDITY
    for host in SERVED_HOSTS:
        leaf = server_certificate(emulator, host)
        assert validity(leaf) <= SERVER_MAX_VALIDITY
        assert ca.not_valid_before_utc <= leaf.not_valid_before_utc
        assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


@pytest.mark.parametrize(
    "names",
    [
        ["www.example.com"],
        ["login.windows.net"],  # an Azure name the emulator does not serve
        ["evilvault.azure.net"],  # the constraint is on a label boundary
        ["10.0.0.1"],
        ["::1"],
    ],
)
def test_a_leaf_for_another_name_signed_by_the_ca_is_rejected(emulator, tmp_path, names):
    chain = tmp_path / "chain.pem"
    write_leaf(Path(emulator.ca_bundle).parent, names, chain)
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        handshake(chain, emulator.ca_bundle, names[0])
    assert failure.value.verify_message == "permitted subtree violation"


@pytest.mark.parametrize("names", [["contoso-kv.vault.azure.net"], ["*.vault.azure.cn"], ["127.0.0.1"]])
def test_a_leaf_for_a_served_name_signed_by_the_ca_verifies(emulator, tmp_path, names):
    chain = tmp_path / "chain.pem"
    write_leaf(Path(emulator.ca_bundle).parent, names, chain)
    handshake(chain, emulator.ca_bundle, names[0].replace("*", "kv"))


def constrained() -> x509.NameConstraints:
    permitted = [x509.DNSName(name) for name in sorted(PERMITTED_DNS)]
    return x509.NameConstraints(permitted_subtrees=[*permitted, x509.IPAddress(*PERMITTED_IP)], excluded_subtrees=None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


UNUSABLE_CAS = {
    "expired": lambda: (
        dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2000, 1, 31, tzinfo=dt.timezone.utc),
        constrained(),
    ),
    "expires in 20 hours": lambda: (_now() - dt.timedelta(days=29), _now() + dt.timedelta(hours=20), constrained()),
    "not yet valid": lambda: (_now() + dt.timedelta(days=2), _now() + dt.timedelta(days=20), constrained()),
    "unconstrained and long-lived (an earlier version's)": lambda: (
        _now() - dt.timedelta(days=1),
        _now() + dt.timedelta(days=365_000),
        None,
    ),
    "constrained but long-lived": lambda: (
        _now() - dt.timedelta(days=1),
        _now() + dt.timedelta(days=365),
        constrained(),
    ),
}


@pytest.mark.parametrize("case", UNUSABLE_CAS)
def test_an_unusable_ca_in_the_state_dir_is_replaced(tmp_path, case):
    state_dir = tmp_path / "state"
    old_pem = write_ca(state_dir, *UNUSABLE_CAS[case]())
    with EmulatorProcess(state_dir=state_dir) as emulator:
        new_pem = Path(emulator.ca_bundle).read_bytes()
        assert new_pem != old_pem
        assert emulator.admin.ca_pem() == new_pem
        new_ca = read_ca(emulator.ca_bundle)
        assert new_ca.extensions.get_extension_for_class(x509.NameConstraints).critical
        assert validity(new_ca) <= CA_MAX_VALIDITY
        server_certificate(emulator, "contoso-kv.vault.azure.net")  # verifies against the new CA
        key = serialization.load_pem_private_key((state_dir / "ca-key.pem").read_bytes(), None)
        assert key.public_key() == new_ca.public_key()
        assert (state_dir / "ca-key.pem").stat().st_mode & 0o077 == 0
    assert "new CA" in emulator.stderr_text()


def test_a_ca_whose_key_does_not_match_is_replaced(tmp_path):
    state_dir = tmp_path / "state"
    with EmulatorProcess(state_dir=state_dir):
        pass
    first_pem = (state_dir / "ca.pem").read_bytes()
    write_ca(tmp_path / "other", _now() - dt.timedelta(hours=1), _now() + dt.timedelta(days=20), constrained())
    (state_dir / "ca-key.pem").write_bytes((tmp_path / "other" / "ca-key.pem").read_bytes())
    with EmulatorProcess(state_dir=state_dir) as emulator:
        assert Path(emulator.ca_bundle).read_bytes() != first_pem
        server_certificate(emulator, "management.azure.com")
