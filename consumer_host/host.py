"""The Host: the public face over a registry, a lifecycle, the operator's controls and what
a host observes of itself (``consumer_host.hosting``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any, Unpack

from consumer_host.hosting import keywords as kw
from consumer_host.hosting import observations
from consumer_host.hosting.consumers import ConsumerBuilder
from consumer_host.hosting.controls import Controls
from consumer_host.hosting.lifecycle import EXIT_OK, CriticalHandler, Lifecycle
from consumer_host.hosting.program import run_program
from consumer_host.hosting.publishing import HostPublisher, PublishKeywords
from consumer_host.hosting.registry import H, Registry, T, W
from consumer_host.operating import probes
from consumer_host.operating.health import HealthServer
from consumer_host.operating.metrics import HostMetrics
from consumer_host.supervision.events import Event, EventHook
from consumer_host.supervision.supervisor import Worker
from consumer_host.transports.broker import BrokerChoice, BrokerCircuitOptions, BrokerCircuits

from ._version import __version__
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError


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
        middleware: Iterable[Any] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"host name must be a non-empty string, got {name!r}")
        if not isinstance(drain_timeout, int | float) or drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be >= 0 seconds, got {drain_timeout!r}")
        self.name = name
        self.broker = broker
        self.clock = clock
        self.health_port = health_port
        self.health_host = health_host
        self.control_token = control_token
        self.lifecycle = Lifecycle(name, drain_timeout=float(drain_timeout), clock=clock, rand=rand)
        self.done = self.lifecycle.done
        self.broker_circuits = BrokerCircuits(self.emit, clock=clock, options=broker_circuit)
        self.metrics = HostMetrics(self, __version__)
        self.consumers = ConsumerBuilder(
            name,
            code_url=broker,
            circuits=self.broker_circuits,
            metrics=self.metrics,
            emit=self.emit,
            # the registry, built next, calls this builder: look it up when a consumer is built
            liveness_of=lambda registered: self.registry.liveness_timeout(registered),  # noqa: PLW0108
            clock=clock,
            rand=rand,
        )
        self.registry = Registry(name, self.consumers)
        self.consumers.add_middleware(*middleware)
        self.publisher = HostPublisher(lambda: self.broker_choice.url, self.consumers.middleware)
        self.lifecycle.on_stopped.append(self.publisher.close)
        self.controls = Controls(name, self.registry, lambda: self.lifecycle.supervisors)
        self._health: HealthServer | None = None

    # -- registration (see hosting.registry.Registry) -------------------------------------------

    def consumer(self, name: str, **options: Unpack[kw.ConsumerRegistration]) -> Callable[[H], H]:
        """Decorator: consume ``queue`` with ``handler(message)`` (plain or ``async def``), at
        least once. Keywords: every consumer option (``queue``, ``concurrency``, ``prefetch``,
        ``max_retries``, ...) and every supervision option (``pool``, ``critical``, ...)."""
        return self.registry.consumer(name, **options)

    def worker(self, name: str, **options: Unpack[kw.SupervisionKeywords]) -> Callable[[W], W]:
        """Decorator: run ``fn(stop)`` as a supervised loop (supervision options as keywords)."""
        return self.registry.worker(name, **options)

    def celery_task(self, name: str, **options: Unpack[kw.CeleryTaskKeywords]) -> Callable[[T], T]:
        """Decorator: handle the Celery task ``name`` (see :meth:`Registry.celery_task`)."""
        return self.registry.celery_task(name, **options)

    def register(
        self, worker: Worker, *, name: str | None = None, **options: Unpack[kw.SupervisionKeywords]
    ) -> None:
        """Register an object with ``name`` and ``run(stop)``, supervised like a worker."""
        self.registry.register(worker, name=name, **options)

    def add_middleware(self, middleware: Any) -> None:
        """Run ``middleware``'s hooks around every message, after those given before."""
        self.consumers.add_middleware(middleware)

    def publish(self, queue: str, body: Any, **options: Unpack[PublishKeywords]) -> str:
        """Publish ``body`` as JSON to ``queue`` on the host's broker, confirmed; returns its
        message id (``headers=``, ``message_id=``; see :class:`~consumer_host.Publisher`)."""
        return self.publisher.publish(queue, body, **options)

    def consumer_names(self) -> list[str]:
        """The registered consumers (what pause and resume address)."""
        return self.registry.consumer_names()

    @property
    def broker_choice(self) -> BrokerChoice:
        """The broker consumers use: as configured by :meth:`use_broker`, else ``Host(broker=)``."""
        return self.consumers.choice

    def use_broker(self, choice: BrokerChoice) -> None:
        """Set the broker before start (the CLI and :meth:`run` resolve it from flags and env)."""
        self.consumers.use(choice)

    def subscribe(self, listener: EventHook) -> None:
        """Call ``listener(event)`` for every event (from the emitting thread; keep it quick)."""
        self.lifecycle.listeners.append(listener)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, never propagated."""
        self.lifecycle.emit(event)

    def on_critical_failure(self, handler: CriticalHandler) -> CriticalHandler:
        """Replace what happens when a critical worker is lost (default: stop, exit code 1)."""
        self.lifecycle.critical_handler = handler
        return handler

    # -- lifecycle (see hosting.lifecycle.Lifecycle) --------------------------------------------

    def start(self) -> None:
        """Start every instance, concurrently, and return at once."""
        with self.lifecycle.state_lock:
            registrations = self.registry.freeze()
            self.consumers.frozen = True
            if any(reg.kind != "worker" for reg in registrations):
                self.consumers.announce()
        self.lifecycle.start(registrations)
        if self.health_port is not None:
            self._health = observations.start_health_server(self, self.health_port)
            self.lifecycle.on_stopped.append(self._health.close)
        self.lifecycle.launch()

    def stop(self, timeout: float | None = None) -> tuple[str, ...]:
        """Stop every instance and wait for them; return the names of those that did not stop.

        Consumers stop taking messages, finish and ack the one in hand, and give the rest back.
        Idempotent and safe to call from any thread, including a worker's own.
        """
        return self.lifecycle.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every instance has ended; ``True`` when they have."""
        return self.done.wait(timeout)

    def shutdown(self, reason: str, exit_code: int = EXIT_OK) -> None:
        """Begin a graceful stop without waiting for it (callable from any thread)."""
        self.lifecycle.shutdown(reason, exit_code)

    @property
    def drain_timeout(self) -> float:
        return self.lifecycle.drain_timeout

    @drain_timeout.setter
    def drain_timeout(self, seconds: float) -> None:
        self.lifecycle.drain_timeout = seconds

    @property
    def exit_code(self) -> int:
        return self.lifecycle.exit_code

    @property
    def stopping(self) -> bool:
        return self.lifecycle.stopping

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start, wait for SIGTERM/SIGINT/SIGHUP or a critical failure, drain, return the exit
        code.

        A second signal during the drain ends the process at once with ``128 + signal``; the
        broker then redelivers whatever was not acked. Threads the handlers started are not
        waited for here: ``consumer-host run`` exits with the code whatever they do.
        """
        return run_program(self, install_signal_handlers=install_signal_handlers)

    # -- what it observes of itself (see hosting.observations) ----------------------------------

    @property
    def health_server_port(self) -> int | None:
        """The port the health server listens on (useful with ``health_port=0``)."""
        return None if self._health is None else self._health.port

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Every running instance has made progress within its ``liveness_timeout``."""
        return observations.liveness(self)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Started, not draining, not quiet, and every consumer that is not tripped consumes."""
        return observations.readiness(self)

    def status_document(self) -> dict[str, Any]:
        """What /status serves: the instances, the broker circuits and the uptime."""
        return observations.status_document(self)

    def brokers(self) -> dict[str, str]:
        """Each broker's circuit state, by redacted URL."""
        return self.broker_circuits.states()

    def status(self) -> list[dict[str, Any]]:
        """One record per instance: instance, worker, state, restarts, failures, last error,
        and what a consumer adds (queue, counts, paused, kill switch, stuck, ...)."""
        return probes.status_records(self.lifecycle.supervisors)

    # -- the operator's controls (see hosting.controls.Controls) --------------------------------

    def pause(self, name: str, *, wait: float = 5.0) -> list[str]:
        """Stop the consumer ``name`` (all its instances) taking messages; what is in flight
        finishes, prefetched messages go back to the queue. Returns the instances, once their
        intake has stopped or after ``wait`` seconds (0: at once; see ``intake_closed``)."""
        return self.controls.pause(name, wait=wait)

    def resume(self, name: str) -> list[str]:
        """Let a paused consumer take messages again (not while the host is quiet)."""
        return self.controls.resume(name)

    def quiet(self, *, wait: float = 5.0) -> None:
        """Every consumer stops taking messages and /readyz answers 503, so a deploy can stop
        intake before SIGTERM (Sidekiq's quiet). There is no way back but a restart."""
        self.controls.quiet(wait=wait)

    def intake_closed(self, name: str | None = None) -> bool:
        """Every running instance of ``name`` (or of every consumer) has stopped taking
        messages: its subscription is cancelled and what it had prefetched was given back."""
        return self.controls.intake_closed(name)

    @property
    def is_quiet(self) -> bool:
        return self.controls.quiet_requested
