"""The process itself: ready line, loopback bind, CA reuse, request logging, clean stop, bad fixtures."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
from azure_emulator.launcher import EmulatorError, EmulatorProcess
from emu_helpers import KV_RESOURCE

HOSTS = [
    "*.vault.azure.net",
    "*.vault.azure.cn",
    "*.vault.usgovcloudapi.net",
    "management.azure.com",
    "management.chinacloudapi.cn",
    "management.usgovcloudapi.net",
    "login.microsoftonline.com",
    "login.chinacloudapi.cn",
    "login.microsoftonline.us",
]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on port (Linux /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_ready_line(emulator):
    assert emulator.http_url.startswith("http://127.0.0.1:")
    assert emulator.imds_authority == emulator.http_url
    assert emulator.msi_endpoint == emulator.http_url + "/msi/token"
    assert emulator.msi_secret == "fake-msi-secret-for-emulator"
    assert Path(emulator.ca_bundle).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert emulator.connect_to == ",".join(f"{host}:443:127.0.0.1:{emulator.https_port}" for host in HOSTS)


def test_binds_loopback_by_default(emulator):
    http_port = int(emulator.http_url.rsplit(":", 1)[1])
    assert listening_addresses(http_port) == {"127.0.0.1"}
    assert listening_addresses(emulator.https_port) == {"127.0.0.1"}


def test_env_for_each_flavour(emulator):
    imds = emulator.env("imds")
    assert imds["AZURE_POD_IDENTITY_AUTHORITY_HOST"] == emulator.imds_authority
    assert "MSI_ENDPOINT" not in imds
    azureml = emulator.env("azureml")
    assert azureml["MSI_ENDPOINT"] == emulator.msi_endpoint
    assert azureml["MSI_SECRET"] == emulator.msi_secret
    for env in (imds, azureml):
        assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == emulator.ca_bundle
        assert env["SIDECAR_CONNECT_TO"] == emulator.connect_to


def test_state_dir_keeps_one_ca_and_ca_out_copies_it(tmp_path):
    copy = tmp_path / "shared" / "ca.pem"
    with EmulatorProcess(state_dir=tmp_path / "state", extra_args=["--ca-out", str(copy)]) as first:
        first_ca = Path(first.ca_bundle).read_bytes()
        assert copy.read_bytes() == first_ca
        assert (tmp_path / "state" / "ca-key.pem").stat().st_mode & 0o077 == 0
    with EmulatorProcess(state_dir=tmp_path / "state") as second:
        assert Path(second.ca_bundle).read_bytes() == first_ca


def test_log_requests_writes_one_line_per_request_without_tokens():
    with EmulatorProcess(extra_args=["--log-requests"]) as emulator:
        response = requests.get(
            emulator.imds_authority + "/metadata/identity/oauth2/token",
            params={"api-version": "2018-02-01", "resource": KV_RESOURCE},
            headers={"Metadata": "true"},
            timeout=10,
        )
        access_token = response.json()["access_token"]
        emulator.stop()
        stderr = emulator.stderr_text()
    assert "DEVELOPMENT EMULATOR" in stderr and "FAKE" in stderr
    lines = [line for line in stderr.splitlines() if "/metadata/identity/oauth2/token" in line and "->" in line]
    assert len(lines) == 1 and "-> 200" in lines[0]
    assert access_token not in stderr
    assert emulator.process.returncode == 0  # SIGTERM stops it cleanly


def test_quiet_without_log_requests(emulator):
    requests.get(emulator.imds_authority + "/metadata/identity/oauth2/token", timeout=10)
    assert "->" not in emulator.stderr_text()


def test_invalid_fixture_fails_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenant_id: not-a-guid\nmsi_secret: x\n")
    with pytest.raises(EmulatorError, match="tenant_id: must be a GUID"):
        EmulatorProcess(bad).start()
