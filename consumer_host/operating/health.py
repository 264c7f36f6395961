"""One small HTTP server in the host: /healthz, /readyz, /metrics, /status.

Liveness asks "is anything stuck?": an instance is stuck when a handler has run, or a connected
consumer's loop has not come round, for longer than its ``liveness_timeout``. A broker outage is
not stuck (restarting the pod would not bring the broker back). Readiness asks "is every
consumer connected and consuming, and are we not draining?". No URLs, secrets or tracebacks in
any answer.

The server is bounded, because it listens off-host: one thread runs a selector loop over every
connection, a connection that has not sent its request within ``read_timeout`` is dropped, and
past ``max_connections`` the longest-idle one is dropped to make room. Someone holding hundreds
of connections open costs a few sockets, never a thread each, and a probe still answers at once.
Routes live in a :class:`Router` table keyed by method and path, so that later routes (POST,
with their own checks) are one ``add`` away.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer_host.clock import SYSTEM_CLOCK

from .metrics import HostMetrics

#: ``() -> (ok, detail)`` for the two probes, and ``() -> document`` for /status.
Probe = Callable[[], tuple[bool, dict[str, Any]]]

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
JSON = "application/json"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request], Response]


def json_response(status: int, document: Any) -> Response:
    return Response(status, JSON, json.dumps(document, default=str).encode() + b"\n")


class Router:
    """Routes by method and path. HEAD is GET without the body; a known path asked with another
    method is a 405 naming the allowed ones, an unknown path a 404."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Route]] = {}

    def add(self, method: str, path: str, route: Route) -> None:
        self._routes.setdefault(path, {})[method.upper()] = route

    def dispatch(self, request: Request) -> Response:
        methods = self._routes.get(request.path)
        if methods is None:
            return json_response(404, {"error": "not found"})
        route = methods.get("GET" if request.method == "HEAD" else request.method)
        if route is None:
            allowed = ", ".join(sorted(methods))
            response = json_response(405, {"error": f"{allowed} only"})
            return Response(405, response.content_type, response.body, {"Allow": allowed})
        try:
            return route(request)
        except Exception:  # noqa: BLE001 - a probe must answer, never hang up
            return json_response(500, {"ok": False})


class HealthServer:
    """Serves the probes from one daemon thread; ``close()`` stops it."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        liveness: Probe,
        readiness: Probe,
        status: Callable[[], dict[str, Any]],
        metrics: HostMetrics,
        read_timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self.router = Router()
        self.router.add("GET", "/healthz", lambda _request: _probe(liveness))
        self.router.add("GET", "/readyz", lambda _request: _probe(readiness))
        self.router.add("GET", "/status", lambda _request: json_response(200, status()))
        self.router.add(
            "GET",
            "/metrics",
            lambda _request: Response(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)),
        )
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._listener = socket.socket(family, kind, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._connections: dict[socket.socket, _Connection] = {}
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="consumer-host-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        else:  # never started: nothing else will release the sockets
            self._release()

    # -- the loop, on the server's thread ----------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closing.is_set():
                for key, mask in self._selector.select(timeout=0.5):
                    if key.data is None:
                        self._accept()
                    elif key.data is self._wake_r:
                        self._wake_r.recv(64)
                    else:
                        self._step(key.data, mask)
                self._drop_idle()
        finally:
            self._release()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: the idle sweep will free some
                return
            if len(self._connections) >= self.max_connections:
                self._drop(min(self._connections.values(), key=lambda c: c.last_active))
            sock.setblocking(False)
            connection = _Connection(sock, SYSTEM_CLOCK.now())
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _step(self, connection: _Connection, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not connection.outgoing:
                if not connection.receive(SYSTEM_CLOCK.now()):
                    self._drop(connection)
                    return
                response = connection.response(self.router)
                if response is not None:
                    connection.respond(response)
                    self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
            if connection.outgoing and connection.send(SYSTEM_CLOCK.now()):
                self._drop(connection)  # answered: every response closes its connection
        except OSError:
            self._drop(connection)

    def _drop_idle(self) -> None:
        cutoff = SYSTEM_CLOCK.now() - self.read_timeout
        for connection in [c for c in self._connections.values() if c.last_active < cutoff]:
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        if self._connections.pop(connection.sock, None) is None:
            return
        self._selector.unregister(connection.sock)
        connection.sock.close()

    def _release(self) -> None:
        for connection in list(self._connections.values()):
            self._drop(connection)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()


class _Connection:
    """One client: its request as it arrives, then its response as it leaves."""

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.last_active = now
        self.incoming = bytearray()
        self.outgoing = b""
        self.head_only = False

    def receive(self, now: float) -> bool:
        """Read what has arrived; ``False`` when the client has gone."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.incoming += chunk
        self.last_active = now
        return True

    def response(self, router: Router) -> Response | None:
        """The answer once the whole request is in, ``None`` while more is to come."""
        head, found, rest = bytes(self.incoming).partition(b"\r\n\r\n")
        if not found:
            too_large = len(self.incoming) > MAX_HEAD_BYTES
            return json_response(431, {"error": "request head too large"}) if too_large else None
        parsed = _parse_head(head)
        if isinstance(parsed, Response):
            return parsed
        method, path, headers, length = parsed
        if len(rest) < length:
            return None
        self.head_only = method == "HEAD"
        return router.dispatch(Request(method, path, headers, rest[:length]))

    def respond(self, response: Response) -> None:
        reason = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            "Server: consumer-host",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        body = b"" if self.head_only else response.body
        self.outgoing = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def send(self, now: float) -> bool:
        """Send what the socket takes; ``True`` once everything has gone."""
        sent = self.sock.send(self.outgoing)
        self.outgoing = self.outgoing[sent:]
        self.last_active = now
        return not self.outgoing


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str], int] | Response:
    """Method, path (query cut off), headers and body length; or the 4xx to answer."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return json_response(400, {"error": "bad request line"})
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return json_response(400, {"error": "bad content-length"})
    if not 0 <= length <= MAX_BODY_BYTES:
        return json_response(413, {"error": "body too large"})
    return parts[0].upper(), parts[1].split("?", 1)[0], headers, length


def _probe(check: Probe) -> Response:
    ok, detail = check()
    return json_response(200 if ok else 503, {"ok": ok, **detail})
