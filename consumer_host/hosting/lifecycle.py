"""A host's lifecycle: start every instance, stop and drain them, the exit code, critical losses.

The :class:`Lifecycle` owns the supervisors (one per instance) and the events that end a host:
a stop request, a lost critical worker, every instance ending by itself.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.consuming.consumer import Consumer
from consumer_host.consuming.watchdog import Watchdog
from consumer_host.errors import CriticalWorkerFailed
from consumer_host.operating import probes
from consumer_host.operating.logs import EventLogger
from consumer_host.operating.probes import describe
from consumer_host.supervision.events import (
    Event,
    EventHook,
    HostStarted,
    HostStopped,
    HostStopping,
    WorkerFinished,
    WorkerTripped,
)
from consumer_host.supervision.supervisor import InstanceState, Supervisor

from .registry import Registration
from .signals import ProgramSignals

EXIT_OK = 0
EXIT_CRITICAL = 1
EXIT_USAGE = 2
EXIT_DRAIN_TIMEOUT = 3

#: ``fn(instance, error)``: what to do when a critical worker is lost.
CriticalHandler = Callable[[str, CriticalWorkerFailed], None]

_log = structlog.get_logger("consumer_host.host")


class Lifecycle:
    """Starts the instances, hands their events to listeners, stops them, keeps the exit code."""

    def __init__(
        self,
        name: str,
        *,
        drain_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.drain_timeout = drain_timeout
        self.drain_budget: float | None = None
        """A child of ``--processes``: the whole stop's drain timeout, of which ``drain_timeout``
        is this process's share (both are logged, so parent and children show one figure)."""
        self.clock = clock
        self.done = threading.Event()
        self.supervisors: list[Supervisor] = []
        self.started = False
        self.started_at: float | None = None
        self.state_lock = threading.Lock()
        self.listeners: list[EventHook] = [EventLogger(name)]
        self.critical_handler: CriticalHandler = self._default_critical_handler
        self.program_mode = False
        """Run as the program (``Host.run``): the main thread does the stop, not a helper."""
        self.on_stopped: list[Callable[[], None]] = []
        """Called once the drain is over, before ``HostStopped`` (servers to close)."""
        self.on_quiet_signal: list[Callable[[], None]] = []
        """Called once SIGTSTP quieted the host (a child of ``--processes`` tells its parent)."""
        self._rand = rand
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = threading.Event()
        self._unstopped: tuple[str, ...] = ()
        self._exit_code = EXIT_OK
        self._stop_reason = ""
        self._finished = 0
        self._wake = threading.Event()
        self._watchdog: Watchdog | None = None

    @property
    def exit_code(self) -> int:
        return self._exit_code

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def consumers(self) -> list[Consumer]:
        return [s.worker for s in self.supervisors if isinstance(s.worker, Consumer)]

    # -- events ---------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, never propagated."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must not break a worker
                _log.exception("event_listener_failed", host=self.name, listener=repr(listener))
        if isinstance(event, WorkerTripped) and event.critical:
            self.critical_handler(event.instance, CriticalWorkerFailed(event.instance, event.error))
        elif isinstance(event, WorkerFinished):
            with self.state_lock:
                self._finished += 1
                all_finished = self._finished == len(self.supervisors)
            if all_finished:
                self.done.set()
                self._wake.set()

    # -- start ----------------------------------------------------------------------------------

    def start(self, registrations: list[Registration]) -> None:
        """Start one supervisor per instance of ``registrations``, concurrently; return at once."""
        with self.state_lock:
            self.started = True
            self.supervisors = [
                Supervisor(
                    reg.factory(instance),
                    instance=instance,
                    registered=reg.name,
                    options=reg.options,
                    emit=self.emit,
                    clock=self.clock,
                    rand=self._rand,
                )
                for reg in registrations
                for instance in reg.instance_names()
            ]
        self.started_at = self.clock.now()

    def launch(self) -> None:
        """Announce the start and set every supervisor going (after the health server is up)."""
        self.emit(
            HostStarted(host=self.name, instances=tuple(s.instance for s in self.supervisors))
        )
        if not self.supervisors:
            self.done.set()
        for supervisor in self.supervisors:
            supervisor.start()
        if self.consumers():
            self._watchdog = Watchdog(self.name, self.clock, self.consumers)
            self._watchdog.start()

    # -- stop -----------------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> tuple[str, ...]:
        """Stop every instance and wait for them; return the names of those that did not stop."""
        self.request_stop("stop() called")
        with self._stop_lock:
            if self._stopped.is_set():
                return self._unstopped
            self._drain(timeout)
            if not any(s.is_alive() for s in self.supervisors):
                self.done.set()
            self._stopped.set()
            if self._watchdog is not None:
                self._watchdog.close()
            for callback in self.on_stopped:
                callback()
        self.emit(
            HostStopped(
                host=self.name,
                exit_code=self._exit_code,
                unstopped=self._unstopped,
                reason=self._stop_reason,
            )
        )
        return self._unstopped

    def _drain(self, timeout: float | None) -> None:
        in_flight = probes.in_flight_ids(self.supervisors)
        share = {} if self.drain_budget is None else {"process_drain_timeout": timeout}
        _log.info(
            "host_draining",
            host=self.name,
            in_flight=len(in_flight),
            held_retries=probes.held_retries(self.supervisors),
            drain_timeout=timeout if self.drain_budget is None else self.drain_budget,
            **share,
            deadline=None
            if timeout is None
            else datetime.fromtimestamp(SYSTEM_CLOCK.wall() + timeout, UTC).isoformat(),
        )
        for supervisor in self.supervisors:
            supervisor.request_stop()
        # Joins are real waits on real threads: a fake clock must not stretch them forever.
        deadline = None if timeout is None else SYSTEM_CLOCK.now() + timeout
        current = threading.current_thread().name
        unstopped = []
        for supervisor in self.supervisors:
            if supervisor.instance == current:
                continue  # a worker stopping the host cannot wait for itself
            if not _join(supervisor, deadline):
                unstopped.append(supervisor.instance)
        self._unstopped = tuple(unstopped)
        if unstopped:
            late = [s for s in self.supervisors if s.instance in unstopped]
            _log.warning(
                "drain_deadline_passed",
                host=self.name,
                unstopped=unstopped,
                abandoned=probes.in_flight_ids(late),
                detail="these messages were not acked: the broker redelivers them",
            )
            if self._exit_code == EXIT_OK:
                self._exit_code = EXIT_DRAIN_TIMEOUT

    def request_stop(self, reason: str) -> None:
        with self.state_lock:
            if self._stop_requested.is_set():
                return
            self._stop_reason = reason
            self._stop_requested.set()
            self._wake.set()
        self.emit(HostStopping(host=self.name, reason=reason))

    def shutdown(self, reason: str, exit_code: int = EXIT_OK) -> None:
        """Begin a graceful stop without waiting for it (callable from any thread)."""
        if exit_code and not self._exit_code:
            self._exit_code = exit_code
        self.request_stop(reason)
        if not self.program_mode:
            threading.Thread(
                target=self.stop, args=(self.drain_timeout,), name=f"{self.name}-stop", daemon=True
            ).start()

    def _default_critical_handler(self, instance: str, error: CriticalWorkerFailed) -> None:
        self.shutdown(f"critical worker {instance!r} was lost: {describe(error)}", EXIT_CRITICAL)

    # -- the program's main loop ----------------------------------------------------------------

    def serve(
        self, signals: ProgramSignals, *, quiet: Callable[[], None], is_quiet: Callable[[], bool]
    ) -> int:
        """Wait for a signal, a critical loss or every instance ending; drain; the exit code."""
        while not (self._stop_requested.is_set() or self.done.is_set()):
            # Timed waits keep the main thread responsive to signals on every platform.
            self._wake.wait(0.25)
            self._wake.clear()
            if signals.stop_requested:
                self.request_stop(f"{signals.stop_requested} received")
            elif signals.quiet_requested and not is_quiet():
                quiet()
                for callback in self.on_quiet_signal:
                    callback()
        if not self._stop_requested.is_set():
            # Every instance ended by itself (all tripped): nothing is left to supervise.
            self._exit_code = self._exit_code or EXIT_CRITICAL
            self.request_stop(self._nothing_left_reason())
        self.stop(self.drain_timeout)
        return self._exit_code

    def _nothing_left_reason(self) -> str:
        tripped = [s for s in self.supervisors if s.state is InstanceState.TRIPPED]
        if not tripped:
            return "no worker left running"
        first = tripped[0]
        return f"no worker left running: {first.instance} tripped ({describe(first.last_error)})"


def _join(supervisor: Supervisor, deadline: float | None) -> bool:
    # Short joins keep the main thread checking for signals (a second SIGTERM ends us).
    while True:
        remaining = 0.25 if deadline is None else min(0.25, deadline - SYSTEM_CLOCK.now())
        if supervisor.join(max(0.0, remaining)):
            return True
        if deadline is not None and SYSTEM_CLOCK.now() >= deadline:
            return False
