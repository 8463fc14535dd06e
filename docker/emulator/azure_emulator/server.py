"""The two listeners, request routing, fault injection and the request log.

Plain HTTP: IMDS, the Azure ML identity endpoint and the admin API. HTTPS (one port, routed by
the Host header): Key Vault, ARM and Microsoft Entra's token endpoint. Both are stdlib
ThreadingHTTPServers speaking HTTP/1.1 keep-alive, with a thread per connection so a hung request
never blocks the others.
"""

from __future__ import annotations

import datetime as dt
import socket
import socketserver
import ssl
import struct
import sys
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure_emulator import admin, admin_guard, arm, entra, imds, keyvault, msi
from azure_emulator.arm import CLOUD_BY_ARM_HOST
from azure_emulator.clouds import CLOUDS, LOGIN_HOSTS
from azure_emulator.faults import Fault
from azure_emulator.state import State
from azure_emulator.web import Request, Response, azure_error, json_response, oauth_error

Endpoint = Callable[[State, Request], Response]
VAULT_SUFFIXES = tuple(cloud.vault_suffix for cloud in CLOUDS.values())
FAULT_CODES = {
    404: "NotFound",
    410: "Gone",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def route(listener: str, host: str, path: str) -> tuple[str, Endpoint]:
    """(kind, endpoint) for a request: kind is imds, msi, admin, entra, keyvault, arm or unknown."""
    if listener == "http":
        if path == imds.PATH:
            return "imds", imds.handle
        if path == msi.PATH:
            return "msi", msi.handle
        if path.startswith(admin.PREFIX):
            return "admin", admin.handle
        return "unknown", _unknown_http
    if host.endswith(VAULT_SUFFIXES):
        return "keyvault", keyvault.handle
    if host in CLOUD_BY_ARM_HOST:
        return "arm", arm.handle
    if host in LOGIN_HOSTS:
        return "entra", entra.handle
    return "unknown", _unknown_https


def _unknown_http(state: State, request: Request) -> Response:
    return json_response(
        404,
        {"error": "not_found", "error_description": f"The plain-HTTP listener serves no {request.path}."},
    )


def _unknown_https(state: State, request: Request) -> Response:
    return azure_error(
        404,
        "UnknownHost",
        f"The emulator serves no host named {request.host!r} over HTTPS (Key Vault, ARM and Entra hosts only).",
    )


def _call(endpoint: Endpoint, state: State, request: Request) -> Response:
    """The endpoint's response; an emulator bug becomes a 500 (and a traceback on stderr), not a hang-up."""
    try:
        return endpoint(state, request)
    except Exception:
        traceback.print_exc()
        return azure_error(500, "EmulatorError", "The emulator failed; see its stderr.")


def _fault_response(kind: str, fault: Fault) -> Response:
    assert fault.status is not None
    message = f"Injected fault: status {fault.status}."
    if kind in ("imds", "msi", "entra"):
        response = oauth_error(fault.status, "fault_injected", message)
    else:
        response = azure_error(fault.status, FAULT_CODES.get(fault.status, "InjectedFault"), message)
    response.headers.update(fault.retry_headers())
    return response


def _host(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [IPv6]:port
        return header[1 : header.find("]")]
    return header.rpartition(":")[0] if ":" in header else header


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # shutdown must not wait for hung requests
    request_queue_size = 1024  # benchmarks open many connections at once
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: State,
        listener: str,
        ssl_context: ssl.SSLContext | None = None,
        log_requests: bool = False,
        admin_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.state = state
        self.listener = listener
        self.ssl_context = ssl_context
        self.log_requests = log_requests
        self.admin_hosts = admin_hosts  # Host names the admin API answers besides loopback (admin_guard)
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the FQDN, which can stall without DNS; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs in the connection's own thread (Handler.handle), not the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # clients hanging up (timeouts, resets, failed handshakes) are routine here
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: EmulatorServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would delay the second
    timeout = 120  # idle keep-alive connections close after this
    server_version = "AzureEmulator/1.0"
    sys_version = ""

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ssl.SSLError):
                return
        super().handle()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: requests are logged by _dispatch, and only with --log-requests."""

    def _dispatch(self) -> None:
        state = self.server.state
        started = time.time()
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            method=self.command,
            host=_host(self.headers.get("Host") or ""),
            path=split.path,
            query={key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()},
            headers=self.headers,
            body=self.rfile.read(length) if length else b"",
        )
        kind, endpoint = route(self.server.listener, request.host, request.path)
        if kind == "admin":
            refused = admin_guard.refusal(request, self.server.admin_hosts)
            self._send(refused or _call(endpoint, state, request))
            return
        entry: dict[str, Any] = {
            "time": started,
            "method": request.method,
            "host": request.host,
            "path": request.path,
            "kind": kind,
            "status": None,
            "client_id": None,
            "audience": None,
            "throttled": False,
            "faulted": False,
            "fault": None,
        }
        fault = state.faults.take(kind, request.host, request.path)
        if fault is not None and self._disrupt(fault, entry, started):
            return
        response = _fault_response(kind, fault) if fault and fault.status else _call(endpoint, state, request)
        entry.update(response.facts, status=response.status)
        # Record before answering: once a client has its answer, the log and counters show it.
        self._record(entry, started)
        self._send(response)

    def _disrupt(self, fault: Fault, entry: dict[str, Any], started: float) -> bool:
        """Apply a fault's latency, reset or hang; True if the request gets no answer at all."""
        entry.update(faulted=True, fault=_fault_name(fault))
        stopping = self.server.state.stopping
        if fault.latency_ms:
            stopping.wait(fault.latency_ms / 1000)
        if not (fault.reset or fault.hang_s):
            return False
        self._record(entry, started)
        if fault.reset:
            self._reset_connection()
        else:
            stopping.wait(fault.hang_s)
            self.close_connection = True  # then hang up without an answer
        return True

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _reset_connection(self) -> None:
        # SO_LINGER 0 makes close() send RST instead of FIN; the socket really closes when
        # finish() closes the handler's file objects.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _record(self, entry: dict[str, Any], started: float) -> None:
        entry["duration_ms"] = round((time.time() - started) * 1000, 3)
        self.server.state.stats.record(entry)
        if self.server.log_requests:
            when = dt.datetime.fromtimestamp(started, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            status = entry["status"] if entry["status"] is not None else entry["fault"]
            sys.stderr.write(
                f"{when} {entry['kind']:<8} {entry['method']} {entry['host']}{entry['path']} -> {status}"
                f" client_id={entry['client_id'] or '-'}"
                f"{' fault=' + entry['fault'] if entry['faulted'] else ''}"
                f"{' throttled' if entry['throttled'] else ''}\n"
            )


def _fault_name(fault: Fault) -> str:
    if fault.reset:
        return "reset"
    if fault.hang_s:
        return "hang"
    return "status" if fault.status else "latency"
