"""The Host: runs what its registry holds, each instance under its own supervisor."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from consumer_host.consuming.consumer import Consumer
from consumer_host.consuming.handling import Handler
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.consuming.watchdog import Watchdog
from consumer_host.hosting.registry import Registration, Registry
from consumer_host.hosting.signals import ProgramSignals
from consumer_host.operating.health import HealthServer
from consumer_host.operating.logs import EventLogger, configure_logging
from consumer_host.operating.metrics import HostMetrics
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
from consumer_host.supervision.supervisor import InstanceState, Supervisor, Worker
from consumer_host.transports.broker import (
    BrokerChoice,
    BrokerCircuitOptions,
    BrokerCircuits,
    resolve_broker,
)

from ._version import __version__
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError, CriticalWorkerFailed, HostAlreadyRunning
from .operating import control, probes

EXIT_OK = 0
EXIT_CRITICAL = 1
EXIT_USAGE = 2
EXIT_DRAIN_TIMEOUT = 3

#: ``fn(instance, error)``: what to do when a critical worker is lost.
CriticalHandler = Callable[[str, CriticalWorkerFailed], None]

_log = structlog.get_logger("consumer_host.host")


class Host:
    """Runs registered workers, each instance in its own thread under its own supervisor.

    ``start()`` returns at once; ``stop()`` drains and returns when every instance has ended (or
    reports those that ignored their stop); ``run()`` is the whole program: start, handle
    SIGTERM/SIGINT, wait, stop, and return the exit code.
    """

    def __init__(
        self,
        name: str = "consumer-host",
        *,
        broker: str | None = None,
        drain_timeout: float = 25.0,
        broker_circuit: BrokerCircuitOptions | None = None,
        health_port: int | None = None,
        health_host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, off-host
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        control_token: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"host name must be a non-empty string, got {name!r}")
        if not isinstance(drain_timeout, int | float) or drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be >= 0 seconds, got {drain_timeout!r}")
        self.name = name
        self.registry = Registry(name, self._make_consumer)
        self._started = False
        self._state_lock = threading.Lock()
        self.broker = broker
        self.drain_timeout = float(drain_timeout)
        self.clock = clock
        self.done = threading.Event()
        self._rand = rand
        self._supervisors: list[Supervisor] = []
        self._listeners: list[EventHook] = [EventLogger(name)]
        self._critical_handler: CriticalHandler = self._default_critical_handler
        self._stop_requested = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = threading.Event()
        self._unstopped: tuple[str, ...] = ()
        self._exit_code = EXIT_OK
        self._stop_reason = ""
        self._finished = 0
        self._program_mode = False
        self._wake = threading.Event()
        self._broker_choice: BrokerChoice | None = None
        self.broker_circuits = BrokerCircuits(self.emit, clock=clock, options=broker_circuit)
        self.health_port = health_port
        self.health_host = health_host
        self.metrics = HostMetrics(self, __version__)
        self._health: HealthServer | None = None
        self._started_at: float | None = None
        self._quiet = False
        self.control_token = control_token
        self._watchdog: Watchdog | None = None

    # -- registration (the registry holds it; see registry.Registry) ----------------------------

    def consumer(self, name: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator: consume ``queue`` with ``handler(message)`` (plain or ``async def``), at
        least once. Keywords: every consumer option (``queue``, ``concurrency``, ``prefetch``,
        ``max_retries``, ...) and every supervision option (``pool``, ``critical``, ...)."""
        return self.registry.consumer(name, **options)

    def worker(
        self, name: str, **options: Any
    ) -> Callable[[Callable[..., None]], Callable[..., None]]:
        """Decorator: run ``fn(stop)`` as a supervised loop (supervision options as keywords)."""
        return self.registry.worker(name, **options)

    def celery_task(self, name: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """Decorator: handle the Celery task ``name`` (see :meth:`Registry.celery_task`)."""
        return self.registry.celery_task(name, **options)

    def register(self, worker: Worker, *, name: str | None = None, **options: Any) -> None:
        """Register an object with ``name`` and ``run(stop)``, supervised like a worker."""
        self.registry.register(worker, name=name, **options)

    @property
    def registrations(self) -> list[Registration]:
        return self.registry.registrations

    def restrict_to(self, names: list[str]) -> None:
        """Keep only the named workers (``--only``)."""
        self.registry.restrict_to(names)

    def set_pool(self, name: str, size: int) -> None:
        """Change a worker's pool size before start (``--pool NAME=N``)."""
        self.registry.set_pool(name, size)

    def _liveness_timeout(self, registered: str) -> float:
        registration = self.registry.get(registered)
        return 60.0 if registration is None else registration.options.liveness_timeout

    def _make_consumer(
        self, instance: str, registered: str, handler: Handler, options: ConsumerOptions
    ) -> Consumer:
        url = self.broker_choice.url
        return Consumer(
            instance,
            handler,
            options,
            transport=options.transport_for(url, instance=instance, clock=self.clock),
            breaker=self.broker_circuits.for_url(url),
            broker=self.broker_choice.redacted,
            emit=self.emit,
            host=self.name,
            clock=self.clock,
            rand=self._rand,
            registered=registered,
            observe_handler=self.metrics.handler_timer(registered, instance),
            stuck_after=self._liveness_timeout(registered) / 2,
        )

    @property
    def broker_choice(self) -> BrokerChoice:
        """The broker consumers use: as configured by :meth:`use_broker`, else ``Host(broker=)``."""
        if self._broker_choice is None:
            self._broker_choice = resolve_broker({}, code=self.broker)
        return self._broker_choice

    def use_broker(self, choice: BrokerChoice) -> None:
        """Set the broker before start (the CLI and :meth:`run` resolve it from flags and env)."""
        if self._started:
            raise HostAlreadyRunning("the broker cannot change once the host has started")
        self._broker_choice = choice

    def subscribe(self, listener: EventHook) -> None:
        """Call ``listener(event)`` for every event (from the emitting thread; keep it quick)."""
        self._listeners.append(listener)

    def on_critical_failure(self, handler: CriticalHandler) -> CriticalHandler:
        """Replace what happens when a critical worker is lost (default: stop, exit code 1)."""
        self._critical_handler = handler
        return handler

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every instance, concurrently, and return at once."""
        with self._state_lock:
            registrations = self.registry.freeze()
            self._started = True
            if any(reg.kind != "worker" for reg in registrations):
                self._announce_broker()
            self._supervisors = [
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
        self._started_at = self.clock.now()
        if self.health_port is not None:
            self._start_health_server(self.health_port)
        self.emit(
            HostStarted(host=self.name, instances=tuple(s.instance for s in self._supervisors))
        )
        if not self._supervisors:
            self.done.set()
        for supervisor in self._supervisors:
            supervisor.start()
        if self._consumers():
            self._watchdog = Watchdog(self.name, self.clock, self._consumers)
            self._watchdog.start()

    def _announce_broker(self) -> None:
        choice = self.broker_choice
        _log.info("broker_selected", host=self.name, broker=choice.redacted, source=choice.source)
        if choice.overridden:
            _log.warning(
                "broker_overridden",
                host=self.name,
                variable=choice.source,
                overridden=choice.overridden,
                detail=f"{choice.source} is set and wins over Host(broker=...); unset it to use "
                "the URL in the code",
            )
        if choice.embedded:
            _log.warning(
                "embedded_broker",
                host=self.name,
                detail=(
                    "using the embedded development broker (kombu's filesystem transport under "
                    f"{choice.url.removeprefix('filesystem://')}): one machine only, and messages "
                    "being handled when the process is killed can be lost. Set "
                    "CONSUMER_HOST_BROKER_URL or --broker to an amqp:// or redis:// URL for "
                    "anything real."
                ),
            )

    def stop(self, timeout: float | None = None) -> tuple[str, ...]:
        """Stop every instance and wait for them; return the names of those that did not stop.

        Consumers stop taking messages, finish and ack the one in hand, and give the rest back.
        Idempotent and safe to call from any thread, including a worker's own.
        """
        self._request_stop("stop() called")
        with self._stop_lock:
            if self._stopped.is_set():
                return self._unstopped
            in_flight = probes.in_flight_ids(self._supervisors)
            _log.info(
                "host_draining",
                host=self.name,
                in_flight=len(in_flight),
                drain_timeout=timeout,
                deadline=None
                if timeout is None
                else datetime.fromtimestamp(SYSTEM_CLOCK.wall() + timeout, UTC).isoformat(),
            )
            for supervisor in self._supervisors:
                supervisor.request_stop()
            # Joins are real waits on real threads: a fake clock must not stretch them forever.
            deadline = None if timeout is None else SYSTEM_CLOCK.now() + timeout
            current = threading.current_thread().name
            unstopped = []
            for supervisor in self._supervisors:
                if supervisor.instance == current:
                    continue  # a worker stopping the host cannot wait for itself
                if not self._join(supervisor, deadline):
                    unstopped.append(supervisor.instance)
            self._unstopped = tuple(unstopped)
            if unstopped:
                late = [s for s in self._supervisors if s.instance in unstopped]
                _log.warning(
                    "drain_deadline_passed",
                    host=self.name,
                    unstopped=unstopped,
                    abandoned=probes.in_flight_ids(late),
                    detail="these messages were not acked: the broker redelivers them",
                )
                if self._exit_code == EXIT_OK:
                    self._exit_code = EXIT_DRAIN_TIMEOUT
            if not any(s.is_alive() for s in self._supervisors):
                self.done.set()
            self._stopped.set()
            if self._watchdog is not None:
                self._watchdog.close()
            if self._health is not None:
                self._health.close()
        self.emit(
            HostStopped(
                host=self.name,
                exit_code=self._exit_code,
                unstopped=self._unstopped,
                reason=self._stop_reason,
            )
        )
        return self._unstopped

    def _join(self, supervisor: Supervisor, deadline: float | None) -> bool:
        # Short joins keep the main thread checking for signals (a second SIGTERM ends us).
        while True:
            remaining = 0.25 if deadline is None else min(0.25, deadline - SYSTEM_CLOCK.now())
            if supervisor.join(max(0.0, remaining)):
                return True
            if deadline is not None and SYSTEM_CLOCK.now() >= deadline:
                return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every instance has ended; ``True`` when they have."""
        return self.done.wait(timeout)

    @property
    def exit_code(self) -> int:
        return self._exit_code

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start, wait for SIGTERM/SIGINT/SIGHUP or a critical failure, drain, return the exit
        code.

        A second signal during the drain ends the process at once with ``128 + signal``; the
        broker then redelivers whatever was not acked. Threads the handlers started are not
        waited for here: ``consumer-host run`` exits with the code whatever they do.
        """
        self._program_mode = True
        if not structlog.is_configured():
            configure_logging("auto", "info", host=self.name)
        if self._broker_choice is None:
            self.use_broker(resolve_broker(os.environ, code=self.broker))
        if self.control_token is None:
            self.control_token = os.environ.get(control.TOKEN_VARIABLE) or None
        signals = ProgramSignals(self.name)
        if install_signal_handlers:
            signals.install()
        try:
            self.start()
            while not (self._stop_requested.is_set() or self.done.is_set()):
                # Timed waits keep the main thread responsive to signals on every platform.
                self._wake.wait(0.25)
                self._wake.clear()
                if signals.stop_requested:
                    self._request_stop(f"{signals.stop_requested} received")
                elif signals.quiet_requested and not self._quiet:
                    self.quiet()
            if not self._stop_requested.is_set():
                # Every instance ended by itself (all tripped): nothing is left to supervise.
                self._exit_code = self._exit_code or EXIT_CRITICAL
                self._request_stop(self._nothing_left_reason())
            self.stop(self.drain_timeout)
            return self._exit_code
        finally:
            signals.restore()

    def _nothing_left_reason(self) -> str:
        tripped = [s for s in self._supervisors if s.state is InstanceState.TRIPPED]
        if not tripped:
            return "no worker left running"
        first = tripped[0]
        return f"no worker left running: {first.instance} tripped ({describe(first.last_error)})"

    def _request_stop(self, reason: str) -> None:
        with self._state_lock:
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
        self._request_stop(reason)
        if not self._program_mode:
            threading.Thread(
                target=self.stop, args=(self.drain_timeout,), name=f"{self.name}-stop", daemon=True
            ).start()

    def _default_critical_handler(self, instance: str, error: CriticalWorkerFailed) -> None:
        self.shutdown(f"critical worker {instance!r} was lost: {describe(error)}", EXIT_CRITICAL)

    # -- events and status --------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, never propagated."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must not break a worker
                _log.exception("event_listener_failed", host=self.name, listener=repr(listener))
        if isinstance(event, WorkerTripped) and event.critical:
            self._critical_handler(
                event.instance, CriticalWorkerFailed(event.instance, event.error)
            )
        elif isinstance(event, WorkerFinished):
            with self._state_lock:
                self._finished += 1
                all_finished = self._finished == len(self._supervisors)
            if all_finished:
                self.done.set()
                self._wake.set()

    def _start_health_server(self, port: int) -> None:
        try:
            self._health = HealthServer(
                host=self.health_host,
                port=port,
                liveness=self.liveness,
                readiness=self.readiness,
                status=self.status_document,
                metrics=self.metrics,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve health checks on {self.health_host}:{port}: {exc.strerror}"
            ) from None
        if self.control_token is not None:
            control.install(self._health.router, self, self.control_token, self.consumer_names())
        self._health.start()
        _log.info(
            "health_server_started",
            host=self.name,
            port=self._health.port,
            control=self.control_token is not None,
        )

    @property
    def health_server_port(self) -> int | None:
        """The port the health server listens on (useful with ``health_port=0``)."""
        return None if self._health is None else self._health.port

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Every running instance has made progress within its ``liveness_timeout``."""
        return probes.liveness(self._supervisors, self.clock.now())

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Started, not draining, and every consumer that is not tripped is consuming."""
        if self._quiet:
            return False, {"reason": "quiet"}
        return probes.readiness(
            self._supervisors, started=self._started, draining=self._stop_requested.is_set()
        )

    def status_document(self) -> dict[str, Any]:
        """What /status serves: the instances, the broker circuits and the uptime."""
        uptime = 0.0 if self._started_at is None else self.clock.now() - self._started_at
        return {
            "host": self.name,
            "version": __version__,
            "uptime": round(uptime, 3),
            "stopping": self.stopping,
            "quiet": self._quiet,
            "ready": self.readiness()[0],
            "live": self.liveness()[0],
            "instances": self.status(),
            "brokers": self.brokers(),
        }

    def brokers(self) -> dict[str, str]:
        """Each broker's circuit state, by redacted URL."""
        return self.broker_circuits.states()

    def status(self) -> list[dict[str, Any]]:
        """One record per instance: instance, worker, state, restarts, failures, last error,
        and what a consumer adds (queue, counts, paused, kill switch, stuck, ...)."""
        return probes.status_records(self._supervisors)

    # -- run-time control ---------------------------------------------------------------------

    def pause(self, name: str, *, wait: float = 5.0) -> list[str]:
        """Stop the consumer ``name`` (all its instances) taking messages; what is in flight
        finishes, prefetched messages go back to the queue. Returns the instances, once their
        intake has stopped or after ``wait`` seconds (0: at once; see ``intake_closed``)."""
        consumers = self._consumers_of(name, "pause")
        for consumer in consumers:
            consumer.pause()
        _log.warning("consumer_paused", host=self.name, worker=name)
        self._await_intake_closed(consumers, wait)
        return [consumer.name for consumer in consumers]

    def resume(self, name: str) -> list[str]:
        """Let a paused consumer take messages again (not while the host is quiet)."""
        consumers = self._consumers_of(name, "resume")
        if self._quiet:
            raise ConfigError(f"cannot resume {name!r}: the host is quiet until it restarts")
        for consumer in consumers:
            consumer.resume()
        _log.info("consumer_resumed", host=self.name, worker=name)
        return [consumer.name for consumer in consumers]

    def quiet(self, *, wait: float = 5.0) -> None:
        """Every consumer stops taking messages and /readyz answers 503, so a deploy can stop
        intake before SIGTERM (Sidekiq's quiet). There is no way back but a restart."""
        self._quiet = True
        consumers = self._consumers()
        for consumer in consumers:
            consumer.pause()
        _log.warning("host_quiet", host=self.name, detail="no consumer takes new messages")
        self._await_intake_closed(consumers, wait)

    def intake_closed(self, name: str | None = None) -> bool:
        """Every running instance of ``name`` (or of every consumer) has stopped taking
        messages: its subscription is cancelled and what it had prefetched was given back."""
        consumers = self._consumers() if name is None else self._consumers_of(name, "inspect")
        return all(consumer.intake_closed() for consumer in consumers)

    def _await_intake_closed(self, consumers: list[Consumer], timeout: float) -> None:
        # A consumer inside a fetch notices within a poll interval. Real time: a real wait.
        deadline = SYSTEM_CLOCK.now() + timeout
        waiting = threading.Event()
        while SYSTEM_CLOCK.now() < deadline and not all(
            consumer.intake_closed() for consumer in consumers
        ):
            waiting.wait(0.01)

    @property
    def is_quiet(self) -> bool:
        return self._quiet

    def consumer_names(self) -> list[str]:
        """The registered consumers (what pause and resume address)."""
        return self.registry.consumer_names()

    def _consumers(self) -> list[Consumer]:
        return [s.worker for s in self._supervisors if isinstance(s.worker, Consumer)]

    def _consumers_of(self, name: str, action: str) -> list[Consumer]:
        registration = self.registry.get(name)
        if registration is None or registration.kind == "worker":
            known = ", ".join(self.consumer_names())
            raise ConfigError(f"cannot {action} {name!r}: no consumer of that name ({known})")
        return [
            s.worker
            for s in self._supervisors
            if s.registered == name and isinstance(s.worker, Consumer)
        ]
