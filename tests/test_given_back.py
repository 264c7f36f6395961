"""A copy the broker refused gives its original back; a quorum queue (RabbitMQ 3.x) counts that
give-back in ``x-delivery-count``. Those give-backs are not crashes: ``max_deliveries`` must not
dead-letter a message for them, on the instance that gave it back or on another instance of the
same queue in the process (issue 22: a retry queue electing a new leader refused copies for
seconds, and one message reached the dead-letter queue). A real crash still counts."""

from __future__ import annotations

import threading
from typing import Any

from consumer_host.consuming.given_back import GivenBack
from consumer_host.errors import CopyRefused
from consumer_host.message import Delivery
from consumer_host.testing import FakeClock

from .fakes import FakeTransport, scripted_consumer
from .helpers import wait_until


def delivered(count: int, message_id: str = "m1") -> Delivery:
    """The same message, delivered for the ``count``-th time as a quorum queue reports it."""
    return Delivery(
        body=b'{"n": 1}',
        content_type="application/json",
        content_encoding="utf-8",
        headers={},
        properties={"message_id": message_id},
        delivery_info={},
        redelivered=count > 1,
        delivery_count=count,
    )


class RefusingTransport(FakeTransport):
    """Refuses the first ``refuse`` retry copies; the original goes back, as on a real broker."""

    def __init__(self, batches: list[list[Delivery]], refuse: int = 0) -> None:
        super().__init__(batches=batches)
        self.refuse = refuse
        self.refusals = refuse
        self.refused: list[Delivery] = []

    def retry(self, d: Delivery, headers: dict[str, Any], delay: float) -> None:
        if self.refuse:
            self.refuse -= 1
            self.refused.append(d)
            raise CopyRefused("cannot copy to 'orders.retry.1000': nacked by the broker")
        super().retry(d, headers, delay)

    def batches_done(self) -> bool:
        return not self.batches and len(self.refused) == self.refusals


def failing_once(message: Any) -> None:
    if message.attempt == 1:
        raise RuntimeError("first attempt fails")


def run_until_settled(
    transport: RefusingTransport, *, max_deliveries: int, given_back: GivenBack | None = None
) -> None:
    """Run one consumer instance until it made or was refused its last copy, then stop it."""
    clock = FakeClock(auto_advance=True)  # the refusal backoff passes at once
    consumer = scripted_consumer(
        transport,
        clock,
        handler=failing_once,
        given_back=given_back,
        max_deliveries=max_deliveries,
    )
    stop = threading.Event()
    loop = threading.Thread(target=consumer.run, args=(stop,))
    loop.start()
    try:
        wait_until(
            lambda: bool(transport.retried or transport.dead) or transport.batches_done(),
            timeout=10,
        )
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()


def test_refused_copies_are_not_counted_as_deliveries():
    transport = RefusingTransport([[delivered(n)] for n in (1, 2, 3, 4)], refuse=3)
    run_until_settled(transport, max_deliveries=2)
    assert len(transport.refused) == 3
    assert transport.dead == []
    (retried,) = transport.retried
    assert retried[0].delivery_count == 4  # the broker's count: three give-backs and this one


def test_a_give_back_by_another_instance_of_the_queue_is_not_counted():
    shared = GivenBack()
    first = RefusingTransport([[delivered(1)]], refuse=1)
    run_until_settled(first, max_deliveries=1, given_back=shared)
    assert first.refused
    assert not first.retried

    second = RefusingTransport([[delivered(2)]])
    run_until_settled(second, max_deliveries=1, given_back=shared)
    assert second.dead == []
    assert [d.delivery_count for d, _, _ in second.retried] == [2]


def test_deliveries_beyond_the_give_backs_still_count():
    """Refused once, then delivered twice more without a settlement (the process died): with
    max_deliveries 2 that is one delivery too many, and the message is dead-lettered."""
    transport = RefusingTransport([[delivered(1)], [delivered(4)]], refuse=1)
    run_until_settled(transport, max_deliveries=2)
    assert transport.retried == []
    ((dead, headers),) = transport.dead
    assert dead.delivery_count == 4
    assert "delivered 3 times without being settled" in headers["x-error"]
