"""Tripped non-critical instances: said again every minute, or the end of the run if asked.

A non-critical instance whose restart circuit tripped (a wrong password, a queue it may not
read) stays down while the rest of the host runs: that is what non-critical means. Without a
health port nothing would say so after its one ``worker_tripped`` line, and a host that handles
nothing could run for days. So while any instance stays tripped, a WARNING names them every
``every`` seconds; with ``exit_on_trip`` the host stops at the first trip instead, exit code 1
(as for a lost critical worker), for a platform to restart it or page someone.

A plain stop (SIGTERM, Ctrl-C) still exits 0 while an instance is tripped: the exit code of a
stop says how the stop went (3: the drain ran out), and marking every routine deploy's stop a
failure for as long as one consumer is down would teach people to ignore the code.
"""

from __future__ import annotations

import threading
from typing import Protocol

import structlog

from consumer_host.clock import Clock
from consumer_host.supervision.events import Event, HostStopping, WorkerStarted, WorkerTripped

from .lifecycle import EXIT_CRITICAL

#: Seconds between two reminders while an instance stays tripped.
REMIND_EVERY = 60.0

_log = structlog.get_logger("consumer_host")


class Stoppable(Protocol):
    name: str
    done: threading.Event

    def shutdown(self, reason: str, exit_code: int = ...) -> None: ...


class TrippedReminder:
    """An event listener (``host.subscribe``) and the thread that repeats the warning."""

    def __init__(
        self,
        host: Stoppable,
        clock: Clock,
        *,
        exit_on_trip: bool = False,
        every: float = REMIND_EVERY,
    ) -> None:
        self._host = host
        self._clock = clock
        self._exit_on_trip = exit_on_trip
        self._every = every
        self._tripped: dict[str, str] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()

    def __call__(self, event: Event) -> None:
        if isinstance(event, HostStopping):
            self._changed.set()  # the thread looks at host.done now, not a minute later
            return
        if isinstance(event, WorkerStarted):
            with self._lock:
                self._tripped.pop(event.instance, None)
            return
        if not isinstance(event, WorkerTripped) or event.critical:
            return  # a critical trip stops the host already
        with self._lock:
            self._tripped[event.instance] = f"{type(event.error).__name__}: {event.error}"
        if self._exit_on_trip:
            self._host.shutdown(
                f"non-critical worker {event.instance!r} tripped and --exit-on-trip is set",
                EXIT_CRITICAL,
            )
        self._changed.set()

    def tripped(self) -> dict[str, str]:
        with self._lock:
            return dict(self._tripped)

    def start(self) -> None:
        threading.Thread(target=self.run, name="consumer-host-tripped", daemon=True).start()

    def run(self) -> None:
        """Until the host is done: once something trips, a WARNING every ``every`` seconds."""
        while not self._host.done.is_set():
            if not self.tripped():
                self._clock.wait(self._changed, self._every)
                self._changed.clear()
                continue
            if self._clock.wait(self._host.done, self._every):
                return
            self.remind()

    def remind(self) -> None:
        tripped = self.tripped()
        if tripped and not self._host.done.is_set():
            _log.warning(
                "instances_still_tripped",
                host=self._host.name,
                instances=sorted(tripped),
                errors=tripped,
                hint="they handle nothing until the host restarts; fix the cause and restart, "
                "or run with --exit-on-trip to stop at the first trip",
            )
