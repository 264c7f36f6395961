"""Slow start limited to the real suspects (transports/suspects.py), on the fake clock."""

from __future__ import annotations

from consumer_host.message import Delivery
from consumer_host.testing import FakeClock
from consumer_host.transports.suspects import SUSPECT_GRACE, SlowStart, is_suspect


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
