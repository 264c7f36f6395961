"""What a host tells about itself: liveness, readiness, the status document, the health server."""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from consumer_host._version import __version__
from consumer_host.clock import Clock
from consumer_host.errors import ConfigError
from consumer_host.operating import control, probes
from consumer_host.operating.health import HealthServer
from consumer_host.operating.metrics import HostMetrics

from .lifecycle import Lifecycle

_log = structlog.get_logger("consumer_host.host")


class Host(Protocol):
    """What is observed: a host, or a parent of host processes (which answers for its children)."""

    name: str
    clock: Clock
    lifecycle: Lifecycle
    metrics: HostMetrics
    health_host: str
    control_token: str | None

    def liveness(self) -> tuple[bool, dict[str, Any]]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def status_document(self) -> dict[str, Any]: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def is_quiet(self) -> bool: ...

    def status(self) -> list[dict[str, Any]]: ...

    def brokers(self) -> dict[str, str]: ...

    def consumer_names(self) -> list[str]: ...

    def pause(self, name: str, *, wait: float = ...) -> list[str]: ...

    def resume(self, name: str) -> list[str]: ...

    def quiet(self, *, wait: float = ...) -> None: ...


def liveness(host: Host) -> tuple[bool, dict[str, Any]]:
    return probes.liveness(host.lifecycle.supervisors, host.clock.now())


def readiness(host: Host) -> tuple[bool, dict[str, Any]]:
    if host.is_quiet:
        return False, {"reason": "quiet"}
    lifecycle = host.lifecycle
    return probes.readiness(
        lifecycle.supervisors, started=lifecycle.started, draining=lifecycle.stopping
    )


def status_document(host: Host) -> dict[str, Any]:
    started_at = host.lifecycle.started_at
    uptime = 0.0 if started_at is None else host.clock.now() - started_at
    return {
        "host": host.name,
        "version": __version__,
        "uptime": round(uptime, 3),
        "stopping": host.stopping,
        "quiet": host.is_quiet,
        "ready": host.readiness()[0],
        "live": host.liveness()[0],
        "instances": host.status(),
        "brokers": host.brokers(),
    }


def start_health_server(host: Host, port: int) -> HealthServer:
    """Serve /healthz /readyz /metrics /status (and the control endpoints with a token)."""
    try:
        server = HealthServer(
            host=host.health_host,
            port=port,
            liveness=host.liveness,
            readiness=host.readiness,
            status=host.status_document,
            metrics=host.metrics,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve health checks on {host.health_host}:{port}: {exc.strerror}"
        ) from None
    if host.control_token is not None:
        control.install(server.router, host, host.control_token, host.consumer_names())
    server.start()
    _log.info(
        "health_server_started",
        host=host.name,
        port=server.port,
        control=host.control_token is not None,
    )
    return server
