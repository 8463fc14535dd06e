"""`python docker/emulator [flags]`: start both listeners, print the ready line, stop on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from azure_emulator import admin_guard, imds, msi, tls
from azure_emulator import fixture as fixture_module
from azure_emulator.clouds import connect_to_setting
from azure_emulator.server import EmulatorServer
from azure_emulator.state import State

BANNER = (
    "azure-emulator: DEVELOPMENT EMULATOR with FAKE secrets and identities. It is not Azure and must "
    "never be used in production or given real secrets.\n"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python docker/emulator", description=__doc__)
    parser.add_argument("--fixture", default=str(fixture_module.DEFAULT_FIXTURE), help="YAML fixture file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=18080, help="IMDS, Azure ML identity, admin (0: any)")
    parser.add_argument("--https-port", type=int, default=18443, help="Key Vault and ARM over TLS (0: any)")
    parser.add_argument("--state-dir", help="keeps the CA (reused if present); default: a fresh temp dir")
    parser.add_argument("--ca-out", help="also copy the CA certificate (PEM) to this path")
    parser.add_argument("--log-requests", action="store_true", help="one line per request on stderr")
    parser.add_argument(
        "--admin-host",
        action="append",
        default=[],
        type=_admin_host,
        metavar="NAME",
        help="a Host name the admin API answers besides loopback addresses and localhost (repeatable)",
    )
    return parser.parse_args(argv)


def _admin_host(value: str) -> str:
    try:
        return admin_guard.canonical_host(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stderr.write(BANNER)
    fixture_path = Path(args.fixture).resolve()
    try:
        raw, _ = fixture_module.load(fixture_path)
    except fixture_module.FixtureError as exc:
        sys.stderr.write(f"azure-emulator: invalid fixture: {exc}\n")
        return 2

    temporary = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="azure-emulator-") if temporary else args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _serve(args, raw, fixture_path, state_dir)
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)


def _serve(args: argparse.Namespace, raw: dict, fixture_path: Path, state_dir: Path) -> int:
    context, ca_path = tls.server_context(state_dir)
    if args.ca_out:
        tls.copy_ca(ca_path, args.ca_out)
    state = State(raw, fixture_path, ca_path)
    # Clients reach a wildcard bind through loopback.
    address = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    # The advertised http_url must reach the admin API too.
    admin_hosts = frozenset([*args.admin_host, admin_guard.canonical_host(address)])
    try:
        http = EmulatorServer((args.host, args.http_port), state, "http", None, args.log_requests, admin_hosts)
        https = EmulatorServer((args.host, args.https_port), state, "https", context, args.log_requests)
    except OSError as exc:
        sys.stderr.write(f"azure-emulator: cannot listen on {args.host}: {exc}\n")
        return 1

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    for server in (http, https):
        threading.Thread(target=server.serve_forever, name=f"{server.listener}-listener", daemon=True).start()

    http_url = f"http://{address}:{http.server_port}"
    ready = {
        "event": "ready",
        "http_url": http_url,
        "https_port": https.server_port,
        "ca_bundle": str(ca_path),
        "imds_authority": http_url,
        "msi_endpoint": http_url + msi.PATH,
        "msi_secret": state.fixture.msi_secret,
        "connect_to": connect_to_setting(address, https.server_port),
        "tenant_id": state.fixture.tenant_id,
    }
    sys.stderr.write(
        f"azure-emulator: listening on {http_url} (IMDS {imds.PATH}, Azure ML {msi.PATH}, /admin/) and "
        f"https://{address}:{https.server_port} (Key Vault, ARM, Entra); CA bundle: {ca_path}\n"
    )
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()

    stop.wait()
    state.stopping.set()  # ends injected latencies and hangs
    for server in (http, https):
        server.shutdown()
        server.server_close()
    sys.stderr.write("azure-emulator: stopped\n")
    return 0
