"""A minimal scoring server for the local demo: GET / is liveness, POST /score says which
expected variables arrived and their lengths (never their values). Stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXPECTED = ("AZURE_OPENAI_API_KEY", "DATABASE_URL", "AZURE_OPENAI_ENDPOINT", "CUSTOM_API_KEY", "OPENAI_KEY_PINNED")


class Handler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, {"status": "Healthy"})

    def do_POST(self) -> None:
        if self.path != "/score":
            self._reply(404, {"error": "not found"})
            return
        arrived = {name: {"length": len(os.environ[name])} for name in EXPECTED if name in os.environ}
        self._reply(200, {"pid": os.getpid(), "variables": arrived, "missing": sorted(set(EXPECTED) - set(arrived))})

    def log_message(self, format: str, *args: object) -> None:
        pass  # request lines add nothing to the demo


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5001
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as PID 1 a SIGTERM without a handler is ignored
    print(json.dumps({"event": "listening", "port": server.server_address[1], "pid": os.getpid()}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
