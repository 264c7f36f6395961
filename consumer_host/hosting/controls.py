"""The operator's controls over a running host: pause and resume a consumer, quiet the host.

They stop intake only: what is in flight finishes, prefetched messages go back to the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from consumer_host.clock import SYSTEM_CLOCK
from consumer_host.consuming.consumer import Consumer
from consumer_host.errors import ConfigError
from consumer_host.supervision.supervisor import Supervisor

from .registry import Registry

_log = structlog.get_logger("consumer_host.host")


class Controls:
    """Pause, resume and quiet, addressed by registered consumer name."""

    def __init__(
        self, name: str, registry: Registry, supervisors: Callable[[], list[Supervisor]]
    ) -> None:
        self.name = name
        self.quiet_requested = False
        """Set once the host went quiet: there is no way back but a restart."""
        self._registry = registry
        self._supervisors = supervisors

    def consumers(self) -> list[Consumer]:
        return [s.worker for s in self._supervisors() if isinstance(s.worker, Consumer)]

    def pause(self, name: str, *, wait: float = 5.0) -> list[str]:
        consumers = self._consumers_of(name, "pause")
        for consumer in consumers:
            consumer.pause()
        _log.warning("consumer_paused", host=self.name, worker=name)
        _await_intake_closed(consumers, wait)
        return [consumer.name for consumer in consumers]

    def resume(self, name: str) -> list[str]:
        consumers = self._consumers_of(name, "resume")
        if self.quiet_requested:
            raise ConfigError(f"cannot resume {name!r}: the host is quiet until it restarts")
        for consumer in consumers:
            consumer.resume()
        _log.info("consumer_resumed", host=self.name, worker=name)
        return [consumer.name for consumer in consumers]

    def quiet(self, *, wait: float = 5.0) -> None:
        self.quiet_requested = True
        consumers = self.consumers()
        for consumer in consumers:
            consumer.pause()
        _log.warning("host_quiet", host=self.name, detail="no consumer takes new messages")
        _await_intake_closed(consumers, wait)

    def intake_closed(self, name: str | None = None) -> bool:
        consumers = self.consumers() if name is None else self._consumers_of(name, "inspect")
        return all(consumer.intake_closed() for consumer in consumers)

    def _consumers_of(self, name: str, action: str) -> list[Consumer]:
        registration = self._registry.get(name)
        if registration is None or registration.kind == "worker":
            known = ", ".join(self._registry.consumer_names())
            raise ConfigError(f"cannot {action} {name!r}: no consumer of that name ({known})")
        return [
            s.worker
            for s in self._supervisors()
            if s.registered == name and isinstance(s.worker, Consumer)
        ]


def _await_intake_closed(consumers: list[Consumer], timeout: float) -> None:
    # A consumer inside a fetch notices within a poll interval. Real time: a real wait.
    deadline = SYSTEM_CLOCK.now() + timeout
    waiting = threading.Event()
    while SYSTEM_CLOCK.now() < deadline and not all(
        consumer.intake_closed() for consumer in consumers
    ):
        waiting.wait(0.01)
