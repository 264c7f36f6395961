"""Run one worker instance forever: catch, log, back off, restart, trip.

A *worker* is any object with a ``name`` and ``run(stop)``. ``run`` is expected to loop until
``stop`` is set. An exception escaping ``run``, or ``run`` returning while no stop was asked for,
is a failure: it is reported (with its traceback, through the event hook), counted in the restart
circuit, and followed by a backoff wait that a stop cuts short. Failures that reach
``max_restarts`` inside ``circuit_window`` trip the circuit and the instance stays stopped.
A :class:`~.errors.Permanent` error (wrong credentials, ...) trips it at once: restarting
cannot help, so there is no backoff, no restart and no traceback, only the cause.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import CircuitBreakerTripped, ConfigError, Permanent, WorkerStopped

from .backoff import Backoff, BackoffPolicy
from .breaker import BreakerState, CircuitBreaker
from .events import (
    EventHook,
    WorkerBackingOff,
    WorkerCrashed,
    WorkerFinished,
    WorkerStarted,
    WorkerTripped,
)

_log = structlog.get_logger("consumer_host.supervisor")

#: The signals that stop a host; worker threads block them so that the main thread gets them.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@runtime_checkable
class Worker(Protocol):
    """What the supervisor runs: a name and a loop that returns once ``stop`` is set."""

    name: str

    def run(self, stop: threading.Event) -> None: ...


#: ``on_trip(instance, error, failures, window)``: told once when an instance trips for good.
TripHook = Callable[[str, BaseException, int, float], None]


@dataclass(frozen=True, kw_only=True)
class SupervisionOptions:
    """How one registered worker is supervised. Seconds everywhere."""

    pool: int = 1
    critical: bool = False
    backoff_min: float = 1.0
    backoff_max: float = 300.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.5
    max_restarts: int = 5
    circuit_window: float = 600.0
    stable_run: float = 30.0
    liveness_timeout: float = 60.0
    on_trip: TripHook | None = None

    def __post_init__(self) -> None:
        _require(
            isinstance(self.pool, int) and self.pool >= 1, "pool", "an integer >= 1", self.pool
        )
        _require(
            isinstance(self.max_restarts, int) and self.max_restarts >= 1,
            "max_restarts",
            "an integer >= 1",
            self.max_restarts,
        )
        _require(
            _positive(self.circuit_window), "circuit_window", "> 0 seconds", self.circuit_window
        )
        _require(_non_negative(self.stable_run), "stable_run", ">= 0 seconds", self.stable_run)
        _require(
            _positive(self.liveness_timeout),
            "liveness_timeout",
            "> 0 seconds",
            self.liveness_timeout,
        )
        _require(
            self.on_trip is None or callable(self.on_trip), "on_trip", "callable", self.on_trip
        )
        self.backoff_policy()  # validates the backoff options, naming them

    def backoff_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            minimum=self.backoff_min,
            maximum=self.backoff_max,
            factor=self.backoff_factor,
            jitter=self.backoff_jitter,
        )


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _require(ok: bool, option: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{option} must be {expected}, got {value!r}")


class InstanceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    TRIPPED = "tripped"
    STOPPED = "stopped"


class Supervisor:
    """Owns one worker instance and the thread that runs it."""

    def __init__(
        self,
        worker: Worker,
        *,
        instance: str,
        registered: str,
        options: SupervisionOptions,
        emit: EventHook,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.worker = worker
        self.instance = instance
        self.registered = registered
        self.options = options
        self.stop_event = threading.Event()
        self.state = InstanceState.STARTING
        self.restarts = 0
        #: The error of the latest failure: for a tripped instance, the one that tripped it.
        self.last_error: BaseException | None = None
        #: Why the instance was stopped for good (``None`` until it trips).
        self.tripped: Permanent | CircuitBreakerTripped | None = None
        self.started_at: float | None = None
        self._emit = emit
        self._clock = clock
        self._backoff = Backoff(options.backoff_policy(), rand=rand)
        self._circuit = CircuitBreaker(
            f"restart:{instance}",
            threshold=options.max_restarts,
            window=options.circuit_window,
            cooldown=None,
            clock=clock,
        )
        self._thread: threading.Thread | None = None

    @property
    def failures(self) -> int:
        """Failures inside the restart window now."""
        return self._circuit.failures

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.instance, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self.stop_event.set()
        # A consumer blocked in an idle read ends it now. Called for every supervisor in turn
        # on stop: one that fails must not keep the others from being asked.
        hook = getattr(self.worker, "on_stop_requested", None)
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 - the stop event is set; the idle wait just ends later
                _log.warning(
                    "stop_wake_failed",
                    instance=self.instance,
                    worker=self.registered,
                    exc_info=True,
                )

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to end; ``True`` when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # Leave the stop signals to the main thread: a signal the kernel hands to a worker
        # thread does not wake a main thread blocked in a join, and the second signal must.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        attempt = 0
        try:
            while not self.stop_event.is_set():
                attempt += 1
                error, ran_for = self._run_once(attempt)
                if error is None:
                    break
                if self._fail(error, ran_for):
                    return
        finally:
            if self.state is not InstanceState.TRIPPED:
                self.state = InstanceState.STOPPED
            self._emit(
                WorkerFinished(instance=self.instance, worker=self.registered, state=self.state)
            )

    def _run_once(self, attempt: int) -> tuple[BaseException | None, float]:
        """Run the worker once; return the failure (``None`` for a clean stop) and the run time."""
        self.state = InstanceState.RUNNING
        self.started_at = self._clock.wall()
        began = self._clock.now()
        self._emit(WorkerStarted(instance=self.instance, worker=self.registered, attempt=attempt))
        try:
            self.worker.run(self.stop_event)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - surviving this is the job
            return exc, self._clock.now() - began
        if self.stop_event.is_set():
            return None, self._clock.now() - began
        stopped = WorkerStopped(
            f"worker {self.instance!r} returned from run() while the host was running; "
            "a worker must loop until its stop event is set"
        )
        return stopped, self._clock.now() - began

    def _fail(self, error: BaseException, ran_for: float) -> bool:
        """Count a failure and wait out its backoff; ``True`` when the instance must end."""
        self.last_error = error
        if ran_for >= self.options.stable_run:
            self._backoff.reset()
        self._circuit.record_failure()
        failures = self._circuit.failures
        if isinstance(error, Permanent):
            self._trip(error, failures, reason=error)
            return True
        self._emit(
            WorkerCrashed(
                instance=self.instance,
                worker=self.registered,
                error=error,
                failures=failures,
                ran_for=ran_for,
            )
        )
        if self._circuit.state is BreakerState.OPEN:
            window = self.options.circuit_window
            self._trip(
                error, failures, CircuitBreakerTripped(self.instance, failures, window, error)
            )
            return True
        if self.stop_event.is_set():
            return True
        delay = self._backoff.next()
        self.state = InstanceState.BACKING_OFF
        self._emit(
            WorkerBackingOff(
                instance=self.instance, worker=self.registered, delay=delay, failures=failures
            )
        )
        if self._clock.wait(self.stop_event, delay):
            return True
        self.restarts += 1
        return False

    def _trip(
        self, error: BaseException, failures: int, reason: Permanent | CircuitBreakerTripped
    ) -> None:
        self.state = InstanceState.TRIPPED
        self.tripped = reason
        window = self.options.circuit_window
        self._emit(
            WorkerTripped(
                instance=self.instance,
                worker=self.registered,
                error=error,
                failures=failures,
                window=window,
                critical=self.options.critical,
            )
        )
        if self.options.on_trip is not None:
            try:
                self.options.on_trip(self.instance, error, failures, window)
            except Exception:  # noqa: BLE001 - the user's callback must not kill the supervisor
                _log.exception("on_trip_failed", instance=self.instance, worker=self.registered)
