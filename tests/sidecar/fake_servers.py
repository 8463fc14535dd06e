"""Small fake servers for tests that need a store or an identity endpoint to misbehave in ways the emulator cannot.

Each is a real HTTP server on 127.0.0.1 in a thread of the test process, with real TLS where the
client needs it (a throwaway CA the sidecar is told to trust), answering what the test's function
says and recording what it received. The sidecar reaches them as it reaches Azure: IMDS through
AZURE_POD_IDENTITY_AUTHORITY_HOST, Key Vault and ARM through SIDECAR_CONNECT_TO.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sidecar_helpers import SidecarRun, run_sidecar_process

TENANT = "00000000-0000-4000-8000-00000000000f"
VAULT_HOST = "contoso-kv.vault.azure.net"
ARM_HOST = "management.azure.com"
# A sidecar started by `run_check` gets this much time to resolve; the subprocess far less, so a run
# that waits for the deadline instead of failing at once fails the test with a clear message.
SIDECAR_TIMEOUT_S = 60
FAIL_FAST_TIMEOUT_S = 20


@dataclass(frozen=True)
class Received:
    """One request a fake server received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    """What a fake server answers: `body` is sent as JSON unless it is bytes or str."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncated: bool = False  # declare the whole body's length, send half of it, hang up

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


Responder = Callable[[Received], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        received = Received(self.command, self.path, {key.lower(): value for key, value in self.headers.items()})
        self.server.received.append(received)
        reply = self.server.respond(received)
        body, content_type = reply.encoded()
        self.send_response(reply.status)
        headers = {"Content-Type": content_type, **reply.headers, "Content-Length": str(len(body))}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if reply.truncated:
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in `received`; nothing goes to the test's output


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Responder) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.received: list[Received] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up or refuses the certificate is the test's business, not noise on stderr


class FakeServer:
    """A fake HTTP(S) server on 127.0.0.1; `received` lists what it was sent."""

    def __init__(self, respond: Responder, *, tls: FakeCA | None = None) -> None:
        self._server = _Server(respond)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_file, tls.key_file)
            # The handshake happens in the request's thread, so a client that gives up cannot block accept().
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port: int = self._server.server_address[1]
        # A short poll: shutdown() waits up to one poll interval, per server, per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def received(self) -> list[Received]:
        return list(self._server.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serving(respond: Responder, *, tls: FakeCA | None = None) -> Iterator[FakeServer]:
    server = FakeServer(respond, tls=tls)
    try:
        yield server
    finally:
        server.close()


@dataclass(frozen=True)
class FakeCA:
    """A throwaway CA the sidecar is told to trust (ca_file), and the certificate the fake Azure hosts present."""

    ca_file: str
    cert_file: str
    key_file: str


NO_KEY_USAGE = dict.fromkeys(
    (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)


def _certificate(
    subject: str, public_key: ec.EllipticCurvePublicKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )


def make_fake_ca(directory: str) -> FakeCA:
    """A CA and a certificate it signs for the fake Key Vault and ARM hosts, as PEM files in `directory`."""
    ca_name = "sidecar tests: fake Azure CA"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _certificate(ca_name, ca_key.public_key(), ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**{**NO_KEY_USAGE, "key_cert_sign": True, "crl_sign": True}), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _certificate(VAULT_HOST, key.public_key(), ca_name, ca_key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(VAULT_HOST), x509.DNSName(ARM_HOST)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = FakeCA(*(os.path.join(directory, name) for name in ("fake-azure-ca.pem", "cert.pem", "key.pem")))
    pem = serialization.Encoding.PEM
    with open(files.ca_file, "wb") as out:
        out.write(ca_cert.public_bytes(pem))
    with open(files.cert_file, "wb") as out:
        out.write(cert.public_bytes(pem))
    with open(files.key_file, "wb") as out:
        out.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def token_answer(token: str, resource: str = "https://vault.azure.net") -> Reply:
    """IMDS's answer with a token (every field a string, as IMDS sends them)."""
    now = int(time.time())
    return Reply(
        200,
        {
            "access_token": token,
            "client_id": "11111111-1111-4111-8111-111111111111",
            "expires_in": "3600",
            "expires_on": str(now + 3600),
            "ext_expires_in": "3600",
            "not_before": str(now),
            "resource": resource,
            "token_type": "Bearer",
        },
    )


def imds_issuing(token: str) -> Responder:
    """An IMDS that gives `token` for whatever resource is asked."""

    def respond(request: Received) -> Reply:
        resource = parse_qs(urlsplit(request.path).query).get("resource", ["https://vault.azure.net"])[0]
        return token_answer(token, resource)

    return respond


def challenge(resource: str = "https://vault.azure.net") -> Reply:
    """Key Vault's answer to a request without a token: 401 and the challenge naming the token's audience."""
    return Reply(
        401,
        {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
        {"WWW-Authenticate": f'Bearer authorization="https://login.windows.net/{TENANT}", resource="{resource}"'},
    )


def vault_answering(answer: Callable[[Received], Reply], *, resource: str = "https://vault.azure.net") -> Responder:
    """A vault that speaks the challenge protocol, then gives `answer` to every request with a bearer token."""

    def respond(request: Received) -> Reply:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return challenge(resource)
        return answer(request)

    return respond


def run_check(env: dict[str, str], secrets: Iterable[str]) -> SidecarRun:
    """Run `python -m sidecar check` with only `env` (and PATH), check its output for `secrets`, parse its events.

    SIDECAR_TIMEOUT is SIDECAR_TIMEOUT_S unless `env` sets it, and the run must end within FAIL_FAST_TIMEOUT_S:
    a failure that waits for the deadline instead of being reported at once fails the test.
    """
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "SIDECAR_TIMEOUT": str(SIDECAR_TIMEOUT_S), **env}
    return run_sidecar_process(
        [sys.executable, "-m", "sidecar", "check"],
        full_env,
        list(secrets),
        timeout_s=FAIL_FAST_TIMEOUT_S,
        late=f"the sidecar was still running after {FAIL_FAST_TIMEOUT_S} s "
        f"(SIDECAR_TIMEOUT={full_env['SIDECAR_TIMEOUT']}): it waited for the deadline instead of failing at once",
    )
