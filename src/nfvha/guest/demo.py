"""A demo VNF: a tiny HTTP application plus the guest daemon checking its /health.

`python -m nfvha.guest.demo --channel unix:PATH` — what `nfvha up --demo N` runs in each
instance. The application listens on an ephemeral loopback port; GET /health answers 200
while it is healthy, and POST /break makes it answer 503 (an application fault the
daemon's HTTP check reports as `unhealthy`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .__main__ import build, parser
from .health import HttpCheck


class _App(BaseHTTPRequestHandler):
    healthy = True

    def do_GET(self) -> None:
        ok = self.path == "/health" and _App.healthy
        self.send_response(200 if ok else 503 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"unhealthy\n")

    def do_POST(self) -> None:
        if self.path == "/break":
            _App.healthy = False
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = parser()
    p.add_argument("--port", type=int, default=0, help="the application's loopback port (default: any free)")
    args = p.parse_args(argv)
    app = ThreadingHTTPServer(("127.0.0.1", args.port), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{app.server_address[1]}/health"
    daemon = build(args, HttpCheck(url, args.health_timeout_ms / 1000))
    try:
        asyncio.run(daemon.run())
    finally:
        app.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
