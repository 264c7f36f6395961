"""Slow start limited to the real suspects (transports/suspects.py), on the fake clock."""

from __future__ import annotations

import threading

from consumer_host import Host
from consumer_host.message import Delivery
from consumer_host.testing import FakeClock
from consumer_host.transports.broker import BrokerChoice
from consumer_host.transports.suspects import SUSPECT_GRACE, SlowStart, is_suspect

from .brokers import unique_queue
from .helpers import wait_until


def delivery(handle: int, *, count: int | None, redelivered: bool = False) -> Delivery:
    return Delivery(
        body=b"{}",
        content_type="application/json",
        content_encoding="utf-8",
        headers={},
        properties={},
        delivery_info={},
        redelivered=redelivered,
        delivery_count=count,
        handle=handle,
    )


def test_only_counted_redeliveries_are_suspects():
    assert is_suspect(delivery(1, count=2, redelivered=True))
    assert not is_suspect(delivery(1, count=1))
    assert not is_suspect(delivery(1, count=None))
    # a classic queue keeps no count: slow start there would protect nothing
    assert not is_suspect(delivery(1, count=None, redelivered=True))


def test_suspects_come_one_at_a_time_for_one_second_in_all():
    clock = FakeClock()
    window = SlowStart(8, clock)
    assert window.allowance(10) == 1
    window.handed_out(1, delivery(1, count=2, redelivered=True))
    assert window.allowance(10) == 0
    clock.advance(SUSPECT_GRACE / 2)
    window.settled(delivery(1, count=2, redelivered=True))
    window.handed_out(2, delivery(2, count=3, redelivered=True))
    assert window.allowance(10) == 0, "the next suspect still alone"
    clock.advance(SUSPECT_GRACE / 2)  # one second of suspects in all, not one each
    assert window.allowance(10) == 7
    assert window.warm


def test_a_non_suspect_opens_at_once_and_the_window_stays_open():
    clock = FakeClock()
    window = SlowStart(4, clock)
    window.handed_out(1, delivery(1, count=None))
    assert window.allowance(10) == 3
    window.forget()  # a reconnect of a process that did not crash
    window.restart()
    assert window.allowance(10) == 4


def test_a_slow_message_at_the_head_of_a_cold_queue_holds_one_slot_only(real_broker):
    """Concurrency 8: one 20 s message first, then 200 fast ones; they do not wait for it."""
    queue = unique_queue("slowhead")
    real_broker.publish(queue, {"n": -1})
    real_broker.publish_many(queue, [{"n": n} for n in range(200)])
    host = Host("slow-head")
    host.use_broker(BrokerChoice(real_broker.url, "test"))
    release = threading.Event()
    fast: list[int] = []
    lock = threading.Lock()

    @host.consumer("orders", queue=queue, concurrency=8, prefetch=16)
    def handle(message):
        if message.body["n"] < 0:
            release.wait(20)
            return
        with lock:
            fast.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: len(fast) == 200, 15, "the fast ones beside the slow head")
        assert not release.is_set()
    finally:
        release.set()
        host.stop(10)
