"""The emulator's CA and server certificate.

The CA lives in the state directory and is reused when present, so a long-lived volume keeps
one CA that clients trust; the server certificate is issued fresh at every start.
"""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import trustme

from azure_emulator.clouds import TLS_NAMES

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CHAIN = "server-key-and-chain.pem"


def load_or_create_ca(state_dir: Path) -> trustme.CA:
    cert_path, key_path = state_dir / CA_CERT, state_dir / CA_KEY
    if cert_path.exists() and key_path.exists():
        return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
    ca = trustme.CA(organization_name="Azure emulator (development only)")
    _write_private(key_path, ca.private_key_pem.bytes())
    cert_path.write_bytes(ca.cert_pem.bytes())
    return ca


def server_context(state_dir: Path) -> tuple[ssl.SSLContext, Path]:
    """A server SSLContext for every emulated host (plus localhost and 127.0.0.1), and the CA path."""
    ca = load_or_create_ca(state_dir)
    leaf = ca.issue_cert(*TLS_NAMES, "localhost", "127.0.0.1")
    chain_path = state_dir / SERVER_CHAIN
    _write_private(chain_path, leaf.private_key_and_cert_chain_pem.bytes())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain_path)
    return context, state_dir / CA_CERT


def copy_ca(ca_path: Path, destination: str) -> None:
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_path, destination)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
