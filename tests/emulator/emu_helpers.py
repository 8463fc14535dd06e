"""Names from the default fixture and small helpers shared by the emulator tests."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

SYSTEM = "11111111-1111-4111-8111-111111111111"
USER = "22222222-2222-4222-8222-222222222222"
NOROLES = "33333333-3333-4333-8333-333333333333"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
VAULT = "https://contoso-kv.vault.azure.net"
KV_RESOURCE = "https://vault.azure.net"
ARM = "https://management.azure.com"
ARM_RESOURCE = "https://management.azure.com/"
WS_MAIN = (
    "/subscriptions/00000000-0000-4000-8000-0000000000a1/resourceGroups/rg-ml/providers/"
    "Microsoft.MachineLearningServices/workspaces/ws-main"
)
KV_API = {"api-version": "7.4"}
ARM_API = {"api-version": "2024-04-01"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_tls_exchange(port: int, ca_bundle: str, host: str, request: bytes) -> bytes:
    """Send one request over TLS through memory BIOs, reading the TCP socket directly.

    Python's ssl module reports a peer's RST after the handshake as a clean EOF; reading the
    socket ourselves surfaces it as ConnectionResetError, so a test can tell RST from FIN.
    """
    context = ssl.create_default_context(cafile=ca_bundle)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(request)
        sock.sendall(outgoing.read())
        received = b""
        while data := sock.recv(65536):
            received += data
        return received


def admin_call(emulator: Any, method: str, route: str, body: Any = None, **headers: str) -> tuple[int, Any]:
    """(status, JSON payload) of one admin request. Header names take _ for - (Content_Type=...); Host
    defaults to the one in http_url."""
    url = urlsplit(emulator.http_url)
    data = None if body is None else json.dumps(body).encode()
    sent = {"Host": url.netloc, **{name.replace("_", "-"): value for name, value in headers.items()}}
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, f"/admin/{route}", body=data, headers=sent)
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    assert response.getheader("Content-Type", "").startswith("application/json"), raw
    return status, json.loads(raw)
