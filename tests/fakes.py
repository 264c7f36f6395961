"""A scripted transport for driving the consumer loop without a broker, and a consumer on it."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from consumer_host.consuming.consumer import Consumer
from consumer_host.consuming.given_back import GivenBack
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.message import Delivery
from consumer_host.supervision.breaker import CircuitBreaker
from consumer_host.testing import FakeClock
from consumer_host.transports.base import QueueSpec, Transport

from .helpers import EventLog


def delivery(body: bytes = b'{"n": 1}', **headers: Any) -> Delivery:
    return Delivery(
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        headers=dict(headers),
        properties={},
        delivery_info={},
    )


class FakeTransport(Transport):
    """``connect_results`` are consumed in order: an exception to raise, or None to succeed.

    ``batches`` are handed out by ``fetch``: a list of deliveries, or an exception to raise.
    Every call is recorded in ``calls``. The optional capabilities are Transport's defaults.
    """

    delays_retries = True
    spec = QueueSpec(queue="orders", dead_letter="orders.dlq")  # scripted_consumer's queue

    def __init__(self, connect_results=(), batches=()) -> None:
        self.connect_results = deque(connect_results)
        self.batches = deque(batches)
        self.calls: list[tuple[str, Any]] = []
        self.acked: list[Delivery] = []
        self.retried: list[tuple[Delivery, dict[str, Any], float]] = []
        self.dead: list[tuple[Delivery, dict[str, Any]]] = []
        self.requeued: list[Delivery] = []
        self.fetched = threading.Event()

    def connect(self) -> None:
        self.calls.append(("connect", None))
        if self.connect_results:
            result = self.connect_results.popleft()
            if result is not None:
                raise result

    def start_consuming(self) -> None:
        self.calls.append(("start_consuming", None))

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        self.fetched.set()
        if not self.batches:
            threading.Event().wait(min(timeout, 0.001))
            return []
        batch = self.batches.popleft()
        if isinstance(batch, BaseException):
            raise batch
        return list(batch)

    def ack(self, d: Delivery) -> None:
        self.acked.append(d)

    def retry(self, d: Delivery, headers: dict[str, Any], delay: float) -> None:
        self.retried.append((d, headers, delay))

    def dead_letter(self, d: Delivery, headers: dict[str, Any]) -> None:
        self.dead.append((d, headers))

    def requeue(self, deliveries: list[Delivery]) -> None:
        self.requeued.extend(deliveries)

    def stop_consuming(self) -> None:
        self.calls.append(("stop_consuming", None))

    def close(self) -> None:
        self.calls.append(("close", None))

    def discard(self) -> None:
        self.calls.append(("discard", None))

    def depth(self) -> dict[str, int]:
        return {}


def scripted_consumer(
    transport: Any,
    clock: FakeClock,
    *,
    handler: Any = lambda m: None,
    name: str = "orders-1",
    breaker: CircuitBreaker | None = None,
    events: Any = None,
    given_back: GivenBack | None = None,
    **options: Any,
) -> Consumer:
    """A consumer of ``orders`` (``options``: more ConsumerOptions) on ``transport``, timed by
    ``clock``. Its broker circuit opens only after 100 failures, unless ``breaker`` is given;
    its events go to ``events`` (dropped if none); jitter is fixed at the middle."""
    return Consumer(
        name,
        handler,
        ConsumerOptions(queue="orders", **options),
        transport=transport,
        breaker=breaker
        or CircuitBreaker("broker:test", threshold=100, window=60, cooldown=5, clock=clock),
        broker="amqp://h//",
        emit=events or EventLog(),
        host="shop",
        clock=clock,
        rand=lambda: 0.5,
        given_back=given_back,
    )
