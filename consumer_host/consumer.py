"""One consumer instance: fetch, decode, hand to the handler, settle; reconnect; drain.

Broker-agnostic: everything broker-specific sits behind :class:`~.transports.base.Transport`.
Handler exceptions are message failures (retry, then dead-letter); they never end the loop.
Broker errors are retried here, with backoff, through the broker circuit shared by every consumer
of the same broker; only a permanent broker error (bad credentials, ...) or a bug escapes to the
supervisor, which counts it toward the restart circuit.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from .backoff import Backoff, BackoffPolicy
from .breaker import BreakerState, CircuitBreaker
from .clock import SYSTEM_CLOCK, Clock
from .decoding import BadMessage, content_types, decode, preview
from .errors import BrokerError, BrokerRefused, BrokerUnavailable, ConfigError, Defer, Reject
from .events import ConsumerConnected, ConsumerDisconnected, EventHook
from .message import ATTEMPT_HEADER, RETRY_AT_HEADER, Delivery, Message
from .redaction import redact_text
from .transports.base import QueueSpec, Transport
from .transports.choose import transport_for

Handler = Callable[[Message], Any]


def defer_step(seconds: float) -> float:
    """How long to hold a deferred message this time: the largest of 0.1 s, 0.2 s, 0.4 s ...
    that does not overshoot. On RabbitMQ every distinct delay is a queue, so arbitrary ETAs
    must map onto a few; a message comes back, and is deferred again, until it is due."""
    step = 0.1
    while step * 2 <= seconds and step < 3276.8:
        step *= 2
    return step


ERROR_HEADER_LIMIT = 500


@dataclass(frozen=True, kw_only=True)
class ConsumerOptions:
    """What a consumer reads, and how it treats failures. Seconds everywhere."""

    queue: str
    prefetch: int = 10
    max_retries: int = 3
    retry_backoff_min: float = 1.0
    retry_backoff_max: float = 60.0
    dead_letter: str | None = None
    accept: tuple[str, ...] = ("json",)
    max_body_bytes: int = 1_048_576
    exchange: str | None = None
    routing_key: str | None = None
    heartbeat: float = 20.0
    ack_coalescing: bool = True
    group: str | None = None
    claim_after: float = 60.0
    reconnect_backoff_min: float = 0.5
    reconnect_backoff_max: float = 30.0
    poll_interval: float = 0.5
    accepted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ConfigError(f"queue must be a non-empty string, got {self.queue!r}")
        for option, minimum in (("prefetch", 1), ("max_body_bytes", 1), ("max_retries", 0)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")
        for option in ("heartbeat", "poll_interval", "claim_after"):
            value = getattr(self, option)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{option} must be >= 0 seconds, got {value!r}")
        BackoffPolicy(minimum=self.retry_backoff_min, maximum=self.retry_backoff_max, jitter=0)
        BackoffPolicy(minimum=self.reconnect_backoff_min, maximum=self.reconnect_backoff_max)
        object.__setattr__(self, "accepted", content_types(self.accept))
        object.__setattr__(self, "accept", tuple(self.accept))

    @property
    def dead_letter_queue(self) -> str:
        return self.dead_letter or f"{self.queue}.dlq"

    def queue_spec(self) -> QueueSpec:
        return QueueSpec(
            queue=self.queue,
            dead_letter=self.dead_letter_queue,
            exchange=self.exchange,
            routing_key=self.routing_key,
            prefetch=self.prefetch,
        )

    def transport_for(self, url: str, *, instance: str) -> Transport:
        """A fresh transport for one consumer instance on ``url``."""
        return transport_for(
            url,
            self.queue_spec(),
            instance=instance,
            heartbeat=self.heartbeat,
            poll_interval=self.poll_interval,
            ack_coalescing=self.ack_coalescing,
            group=self.group,
            claim_after=self.claim_after,
        )

    def retry_delay(self, attempt: int) -> float:
        """Delay before retrying a message whose ``attempt``-th delivery failed.

        No jitter: on RabbitMQ each distinct delay is a queue, so the set of delays stays small.
        """
        policy = BackoffPolicy(
            minimum=self.retry_backoff_min, maximum=self.retry_backoff_max, jitter=0
        )
        return policy.base_delay(attempt - 1)


class Consumer:
    """A worker that consumes one queue through one transport, owned by one thread."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        options: ConsumerOptions,
        *,
        transport: Transport,
        breaker: CircuitBreaker,
        broker: str,
        emit: EventHook,
        host: str,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        registered: str | None = None,
        observe_handler: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.options = options
        self.transport = transport
        self._breaker = breaker
        self._broker = broker
        self._emit = emit
        self._clock = clock
        self._rand = rand
        self._registered = registered or name
        self._log = structlog.get_logger("consumer_host.consumer").bind(
            host=host, worker=name, queue=options.queue
        )
        self._held: list[tuple[float, int, Delivery]] = []
        self._held_seq = 0
        self._connected_once = False
        self.connected = False
        self.consuming = False
        self.in_flight = 0
        self.acked = 0
        self.retried = 0
        self.dead_lettered = 0
        self.rejected = 0
        self.reconnects = 0
        self.deferred = 0
        self.last_progress = clock.now()
        self.handler_started = 0.0
        self._observe = observe_handler or (lambda _seconds: None)

    def status(self) -> dict[str, Any]:
        return {
            "queue": self.options.queue,
            "connected": self.connected,
            "consuming": self.consuming,
            "acked": self.acked,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered + self.rejected,
            "rejected_bad_input": self.rejected,
            "in_flight": self.in_flight,
            "reconnects": self.reconnects,
            "deferred": self.deferred,
            "outcomes": {
                "acked": self.acked,
                "retried": self.retried,
                "dead_lettered": self.dead_lettered,
                "rejected_bad_input": self.rejected,
            },
        }

    def stuck_for(self, now: float) -> float:
        """Seconds this consumer has been stuck: in one handler, or connected without looping.

        Waiting for a broker that is down is not being stuck.
        """
        if self.in_flight:
            return now - self.handler_started
        if self.connected:
            return now - self.last_progress
        return 0.0

    @property
    def ready(self) -> bool:
        return self.connected and self.consuming

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        reconnect = Backoff(
            BackoffPolicy(
                minimum=self.options.reconnect_backoff_min,
                maximum=self.options.reconnect_backoff_max,
            ),
            rand=self._rand,
        )
        try:
            while not stop.is_set():
                if not self._connect(stop, reconnect):
                    return
                try:
                    self._consume(stop)
                except BrokerUnavailable as exc:
                    self._breaker.record_failure()
                    if self._disconnected(stop, exc, self._reconnect_delay(reconnect)):
                        return
        finally:
            self.connected = False
            self.consuming = False
            self.transport.close()

    def _connect(self, stop: threading.Event, reconnect: Backoff) -> bool:
        """Connect and subscribe, waiting on the broker circuit; ``False`` if stopped first."""
        while not stop.is_set():
            if not self._breaker.allow():
                retry_at = self._breaker.retry_at()
                pause = 1.0 if retry_at is None else retry_at - self._clock.now()
                # Look again at least every second: another consumer's probe may close it sooner.
                self._clock.wait(stop, min(max(pause, 0.01), 1.0))
                continue
            try:
                self.transport.connect()
                self.transport.start_consuming()
            except BrokerRefused:
                self._breaker.record_failure()
                raise
            except BrokerUnavailable as exc:
                self._breaker.record_failure()
                if self._disconnected(stop, exc, self._reconnect_delay(reconnect)):
                    return False
                continue
            self._breaker.record_success()
            reconnect.reset()
            self.connected = self.consuming = True
            self._emit(
                ConsumerConnected(
                    instance=self.name,
                    worker=self._registered,
                    queue=self.options.queue,
                    broker=self._broker,
                    reconnect=self._connected_once,
                )
            )
            if self._connected_once:
                self.reconnects += 1
            self._connected_once = True
            return True
        return False

    def _reconnect_delay(self, reconnect: Backoff) -> float:
        """Our own backoff while the broker circuit is closed; once it is open the circuit
        paces the retries (one probe per cool-down), and a closed circuit lets us in at once."""
        if self._breaker.state is BreakerState.CLOSED:
            return reconnect.next()
        return 0.0

    def _disconnected(self, stop: threading.Event, error: BrokerError, delay: float) -> bool:
        """Report a lost or failed connection and back off; ``True`` if stopped meanwhile."""
        self.connected = self.consuming = False
        self.transport.discard()
        self._emit(
            ConsumerDisconnected(
                instance=self.name,
                worker=self._registered,
                queue=self.options.queue,
                broker=self._broker,
                error=str(error),
                delay=delay,
            )
        )
        return self._clock.wait(stop, delay)

    def _consume(self, stop: threading.Event) -> None:
        transport = self.transport
        poll = self.options.poll_interval
        while not stop.is_set():
            deliveries = transport.fetch(self._next_poll(poll), self.options.prefetch)
            self.last_progress = self._clock.now()
            for index, delivery in enumerate(deliveries):
                if stop.is_set():
                    transport.requeue(deliveries[index:])
                    break
                self._process(delivery)
            if self._held:
                self._release_due(stop)
        self._drain()

    def _drain(self) -> None:
        """Stop taking messages and give back what was fetched but not started."""
        self.consuming = False
        held = [delivery for _, _, delivery in self._held]
        self._held.clear()
        self.transport.stop_consuming()
        leftovers = self.transport.fetch(0, 1_000)
        if held or leftovers:
            self.transport.requeue(held + leftovers)

    # -- one message ------------------------------------------------------------------------------

    def _process(self, delivery: Delivery) -> None:
        if not self.transport.delays_retries and self._hold_if_early(delivery):
            return
        self.in_flight = 1
        try:
            try:
                body = decode(delivery, self.options.accepted, self.options.max_body_bytes)
            except BadMessage as bad:
                self._reject_bad_input(delivery, bad)
                return
            attempt = max(delivery.attempt, delivery.delivery_count or 1)
            if attempt > self.options.max_retries + 1:
                # Delivered this often without an ack or a failure: the handler keeps killing
                # the process. Stop the loop of crashes here.
                error = RuntimeError(f"delivered {attempt} times without being settled")
                self._dead_letter(delivery, error, attempt, reason="redelivered too often")
                return
            message = Message(
                body=body,
                headers=delivery.headers,
                content_type=delivery.content_type,
                message_id=delivery.message_id,
                delivery_info=delivery.delivery_info,
                redelivered=delivery.redelivered,
                attempt=attempt,
                queue=self.options.queue,
                raw=delivery.body,
            )
            self.handler_started = self._clock.now()
            began = time.perf_counter()
            try:
                self.handler(message)
            except Reject as reject:
                self._observe(time.perf_counter() - began)
                self._dead_letter(delivery, reject, attempt, reason="rejected by handler")
            except Defer as defer:
                headers = {k: v for k, v in delivery.headers.items() if k != RETRY_AT_HEADER}
                self.transport.retry(delivery, headers, defer_step(defer.seconds))
                self.deferred += 1
            except Exception as exc:  # noqa: BLE001 - a handler failure is a message failure
                self._observe(time.perf_counter() - began)
                self._failed(delivery, exc, attempt)
            else:
                self._observe(time.perf_counter() - began)
                self.transport.ack(delivery)
                self.acked += 1
        finally:
            self.in_flight = 0
            self.last_progress = self._clock.now()

    def _failed(self, delivery: Delivery, error: Exception, attempt: int) -> None:
        if attempt > self.options.max_retries:
            self._dead_letter(delivery, error, attempt, reason="max retries exceeded")
            return
        delay = self.options.retry_delay(attempt)
        headers = {**delivery.headers, ATTEMPT_HEADER: attempt + 1}
        headers.pop(RETRY_AT_HEADER, None)
        self.transport.retry(delivery, headers, delay)
        self.retried += 1
        self._log.warning(
            "message_retrying",
            message_id=delivery.message_id,
            attempt=attempt,
            delay=delay,
            error=redact_text(f"{type(error).__name__}: {error}"),
            exc_info=error if attempt == 1 else None,
        )

    def _dead_letter(
        self, delivery: Delivery, error: BaseException, attempt: int, *, reason: str
    ) -> None:
        self.transport.dead_letter(delivery, self._error_headers(delivery, error, attempt))
        self.dead_lettered += 1
        self._log.error(
            "message_dead_lettered",
            message_id=delivery.message_id,
            attempts=attempt,
            reason=reason,
            dead_letter_queue=self.options.dead_letter_queue,
            error=redact_text(f"{type(error).__name__}: {error}"),
            # The first failure's line already carried the traceback, when there was a retry.
            exc_info=error if attempt == 1 and not isinstance(error, Reject) else None,
        )

    def _reject_bad_input(self, delivery: Delivery, bad: BadMessage) -> None:
        self.transport.dead_letter(delivery, self._error_headers(delivery, bad, delivery.attempt))
        self.rejected += 1
        self._log.warning(
            "message_rejected",
            message_id=delivery.message_id,
            reason=bad.reason,
            detail=bad.detail[:200],
            content_type=delivery.content_type,
            body=preview(delivery.body),
            dead_letter_queue=self.options.dead_letter_queue,
        )

    def _error_headers(
        self, delivery: Delivery, error: BaseException, attempt: int
    ) -> dict[str, Any]:
        headers = {k: v for k, v in delivery.headers.items() if k != RETRY_AT_HEADER}
        # Handlers put anything into their exceptions, connection URLs included.
        text = redact_text(error.detail if isinstance(error, BadMessage) else str(error))
        headers.update(
            {
                "x-error": (f"{error.reason}: {text}" if isinstance(error, BadMessage) else text)[
                    :ERROR_HEADER_LIMIT
                ],
                "x-error-type": type(error).__name__,
                "x-failed-at": datetime.now(UTC).isoformat(),
                "x-original-queue": self.options.queue,
                "x-attempts": attempt,
            }
        )
        if isinstance(error, BadMessage):
            headers["x-error-reason"] = error.reason
        return headers

    # -- retries held in process (transports without broker-side delays) ---------------------------

    def _hold_if_early(self, delivery: Delivery) -> bool:
        due = delivery.headers.get(RETRY_AT_HEADER)
        if not isinstance(due, int | float) or isinstance(due, bool):
            return False
        wait = due - self._clock.wall()
        if wait <= 0:
            return False
        self._held_seq += 1
        heapq.heappush(self._held, (self._clock.now() + wait, self._held_seq, delivery))
        return True

    def _release_due(self, stop: threading.Event) -> None:
        now = self._clock.now()
        while self._held and self._held[0][0] <= now and not stop.is_set():
            _, _, delivery = heapq.heappop(self._held)
            delivery.headers.pop(RETRY_AT_HEADER, None)
            self._process(delivery)

    def _next_poll(self, poll: float) -> float:
        if not self._held:
            return poll
        return max(0.0, min(poll, self._held[0][0] - self._clock.now()))
