"""Builds each consumer instance from what the host shares: the broker, its circuit, metrics."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.consuming.consumer import Consumer
from consumer_host.consuming.given_back import GivenBack
from consumer_host.consuming.handling import Handler
from consumer_host.consuming.middleware import HOOKS, ConsumerInfo, name_of, wrap_handler
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.errors import ConfigError, HostAlreadyRunning
from consumer_host.operating.metrics import HostMetrics
from consumer_host.supervision.events import EventHook
from consumer_host.transports.broker import (
    BrokerChoice,
    BrokerCircuits,
    messaging_system,
    resolve_broker,
)

_log = structlog.get_logger("consumer_host.host")

#: ``fn(registered) -> seconds``: the liveness timeout a registered consumer was given.
LivenessOf = Callable[[str], float]


class ConsumerBuilder:
    """The broker every consumer of a host uses, and the factory the registry calls."""

    def __init__(
        self,
        host: str,
        *,
        code_url: str | None,
        circuits: BrokerCircuits,
        metrics: HostMetrics,
        emit: EventHook,
        liveness_of: LivenessOf,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.host = host
        self.code_url = code_url
        self.frozen = False
        self._choice: BrokerChoice | None = None
        self._circuits = circuits
        self._metrics = metrics
        self._emit = emit
        self._liveness_of = liveness_of
        self._clock = clock
        self._rand = rand
        self.middleware: list[Any] = []
        """Per-message middleware every consumer runs (``Host(middleware=...)``)."""
        # Per queue, shared by its instances and kept over restarts: the broker hands a message
        # one instance gave back to whichever has room (see consuming/given_back.py).
        self._given_back: dict[str, GivenBack] = {}

    @property
    def choice(self) -> BrokerChoice:
        """As set by :meth:`use`, else ``Host(broker=...)``, else the embedded broker."""
        if self._choice is None:
            self._choice = resolve_broker({}, code=self.code_url)
        return self._choice

    @property
    def chosen(self) -> bool:
        return self._choice is not None

    def add_middleware(self, *middleware: Any) -> None:
        if self.frozen:
            raise HostAlreadyRunning("middleware cannot be added once the host has started")
        for item in middleware:
            if not any(callable(getattr(item, hook, None)) for hook in HOOKS):
                raise ConfigError(
                    f"middleware {name_of(item)!r} has none of the hooks {', '.join(HOOKS)}"
                )
            self.middleware.append(item)

    def use(self, choice: BrokerChoice) -> None:
        if self.frozen:
            raise HostAlreadyRunning("the broker cannot change once the host has started")
        self._choice = choice

    def __call__(
        self, instance: str, registered: str, handler: Handler, options: ConsumerOptions
    ) -> Consumer:
        url = self.choice.url
        info = ConsumerInfo(
            name=registered, instance=instance, queue=options.queue, system=messaging_system(url)
        )
        wrapped, chain = wrap_handler(handler, self.middleware, options, info)
        return Consumer(
            instance,
            wrapped,
            options,
            transport=options.transport_for(url, instance=instance, clock=self._clock),
            breaker=self._circuits.for_url(url),
            broker=self.choice.redacted,
            emit=self._emit,
            host=self.host,
            clock=self._clock,
            rand=self._rand,
            registered=registered,
            observe_handler=self._metrics.handler_timer(registered, instance),
            stuck_after=self._liveness_of(registered) / 2,
            chain=chain,
            given_back=self._given_back.setdefault(options.queue, GivenBack()),
        )

    def announce(self) -> None:
        """Log the broker and where it came from, warning when it may surprise."""
        choice = self.choice
        _log.info("broker_selected", host=self.host, broker=choice.redacted, source=choice.source)
        if choice.overridden:
            _log.warning(
                "broker_overridden",
                host=self.host,
                variable=choice.source,
                overridden=choice.overridden,
                detail=f"{choice.source} is set and wins over Host(broker=...); unset it to use "
                "the URL in the code",
            )
        if choice.embedded:
            _log.warning(
                "embedded_broker",
                host=self.host,
                detail=(
                    "using the embedded development broker (kombu's filesystem transport under "
                    f"{choice.url.removeprefix('filesystem://')}): one machine only, and messages "
                    "being handled when the process is killed can be lost. Set "
                    "CONSUMER_HOST_BROKER_URL or --broker to an amqp:// or redis:// URL for "
                    "anything real."
                ),
            )
