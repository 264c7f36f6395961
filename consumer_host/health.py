"""One small HTTP server in the host: /healthz, /readyz, /metrics, /status.

Liveness asks "is anything stuck?": an instance is stuck when a handler has run, or a connected
consumer's loop has not come round, for longer than its ``liveness_timeout``. A broker outage is
not stuck (restarting the pod would not bring the broker back). Readiness asks "is every
consumer that should be consuming connected and consuming, and are we not draining?".
Only GET; no URLs, secrets or tracebacks in any answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import HostMetrics

#: ``() -> (ok, detail)`` for the two probes, and ``() -> document`` for /status.
Probe = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serves the probes in a daemon thread; ``close()`` stops it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        liveness: Probe,
        readiness: Probe,
        status: Callable[[], dict[str, Any]],
        metrics: HostMetrics,
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/healthz": lambda: _probe(liveness),
            "/readyz": lambda: _probe(readiness),
            "/status": lambda: (200, "application/json", _json(status())),
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)),
        }
        self._server = ThreadingHTTPServer((host, port), _handler(routes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="consumer-host-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _probe(check: Probe) -> tuple[int, str, bytes]:
    ok, detail = check()
    return (200 if ok else 503), "application/json", _json({"ok": ok, **detail})


def _json(document: Any) -> bytes:
    return json.dumps(document, default=str).encode() + b"\n"


def _handler(
    routes: dict[str, Callable[[], tuple[int, str, bytes]]],
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "consumer-host"
        sys_version = ""

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._send(404, "application/json", _json({"error": "not found"}))
                return
            try:
                status, content_type, body = route()
            except Exception:  # noqa: BLE001 - a probe must answer, never hang up
                status, content_type, body = 500, "application/json", _json({"ok": False})
            self._send(status, content_type, body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def _refuse(self) -> None:
            self._send(405, "application/json", _json({"error": "GET only"}))

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds are not worth a log line

    return Handler
