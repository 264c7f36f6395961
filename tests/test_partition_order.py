"""Strict per-key order across retries (``partition_order="strict"``, issue 23 point 4), on a
scripted transport and a fake clock: a failed message waits for its retry in its key's lane,
the key's later messages wait behind it, other keys go on; the waits end by the clock, give
back on a drain or a pause, and dead-lettering frees the key."""

from __future__ import annotations

import json
import threading

from consumer_host import Defer
from consumer_host.consuming.lane_retries import LaneRetries
from consumer_host.errors import BrokerUnavailable
from consumer_host.message import ATTEMPT_HEADER, Delivery
from consumer_host.testing import FakeClock

from .fakes import FakeTransport, scripted_consumer
from .helpers import wait_until


def keyed(key: str, seq: int) -> Delivery:
    body = json.dumps({"key": key, "seq": seq}).encode()
    return Delivery(
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        headers={},
        properties={"message_id": f"{key}{seq}"},
        delivery_info={},
    )


class Run:
    """A partitioned consumer on a scripted transport, its loop on a thread."""

    def __init__(self, handler, deliveries, **options) -> None:
        self.clock = FakeClock()
        self.transport = FakeTransport(batches=[deliveries])
        settings = {"concurrency": 4, "partition_by": lambda m: m.body["key"], **options}
        self.consumer = scripted_consumer(
            self.transport, self.clock, handler=handler, name="orders", **settings
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def acked(self) -> list[str]:
        return [d.message_id or "?" for d in self.transport.acked]


class Recorder:
    """A handler that fails the attempts it is told to, and records every call."""

    def __init__(self, failing: dict[str, int]) -> None:
        self.failing = failing  # message id -> how many first attempts fail
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, message) -> None:
        name = f"{message.body['key']}{message.body['seq']}"
        with self.lock:
            self.calls.append((name, message.attempt))
        if message.attempt <= self.failing.get(name, 0):
            raise RuntimeError(f"{name} failed")

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]


def test_a_retry_waits_in_its_lane_and_other_keys_go_on():
    handler = Recorder({"a1": 1})
    deliveries = [keyed("a", 1), keyed("a", 2), keyed("b", 1), keyed("b", 2)]
    with Run(handler, deliveries, retry_backoff_min=5.0) as run:
        wait_until(lambda: run.acked() == ["b1", "b2"] or set(run.acked()) == {"b1", "b2"})
        assert run.consumer.held_retries == 1
        assert "a2" not in handler.names()  # a's later message waits behind a1's retry
        assert run.transport.retried == []  # nothing went through the broker's retry path
        assert run.consumer.counters.retried == 1
        run.clock.advance(4.9)
        assert "a2" not in handler.names()
        run.clock.advance(0.2)
        wait_until(lambda: {"a1", "a2"} <= set(run.acked()))
    a_calls = [call for call in handler.calls if call[0].startswith("a")]
    assert a_calls == [("a1", 1), ("a1", 2), ("a2", 1)]
    assert [name for name in run.acked() if name.startswith("a")] == ["a1", "a2"]
    assert run.consumer.held_retries == 0


def test_the_retry_carries_its_attempt_and_exhaustion_dead_letters_and_frees_the_key():
    handler = Recorder({"a1": 99})
    deliveries = [keyed("a", 1), keyed("a", 2)]
    with Run(handler, deliveries, max_retries=2, retry_backoff_min=1.0) as run:
        for attempts in (1, 2):
            # The retry waits in its lane before the clock moves: advanced earlier, the wait
            # would start after the jump and never come due.
            wait_until(
                lambda n=attempts: len(handler.calls) == n and run.consumer.held_retries == 1
            )
            run.clock.advance(10)
        wait_until(lambda: run.acked() == ["a2"])
    assert handler.calls == [("a1", 1), ("a1", 2), ("a1", 3), ("a2", 1)]
    ((dead, headers),) = run.transport.dead
    assert dead.message_id == "a1"
    assert headers["x-attempts"] == 3
    assert headers[ATTEMPT_HEADER] == 3
    assert run.transport.retried == []
    assert run.consumer.counters.retried == 2


def test_a_drain_during_a_retry_wait_gives_the_key_back_in_order():
    handler = Recorder({"a1": 1})
    deliveries = [keyed("a", 1), keyed("a", 2), keyed("a", 3), keyed("b", 1)]
    run = Run(handler, deliveries, retry_backoff_min=60.0)
    with run:
        wait_until(lambda: run.acked() == ["b1"] and run.consumer.held_retries == 1)
    assert [d.message_id for d in run.transport.requeued] == ["a1", "a2", "a3"]
    assert handler.names() == ["a1", "b1"] or handler.names() == ["b1", "a1"]


def test_a_pause_during_a_retry_wait_gives_the_key_back():
    handler = Recorder({"a1": 1})
    with Run(handler, [keyed("a", 1), keyed("a", 2)], retry_backoff_min=60.0) as run:
        wait_until(lambda: run.consumer.held_retries == 1)
        run.consumer.pause()
        wait_until(lambda: len(run.transport.requeued) == 2)
        assert run.consumer.held_retries == 0
    assert [d.message_id for d in run.transport.requeued] == ["a1", "a2"]


def test_a_lost_connection_forgets_the_wait_and_the_redelivery_runs_in_order():
    """The broker takes back what was unacked: the wait ends with the connection, and the
    redelivered messages run in order as first deliveries."""
    handler = Recorder({"a1": 1})
    with Run(handler, [keyed("a", 1), keyed("a", 2)], retry_backoff_min=60.0) as run:
        wait_until(lambda: run.consumer.held_retries == 1)
        run.transport.batches.append(BrokerUnavailable("connection reset"))
        wait_until(lambda: not run.consumer.connected)
        assert run.consumer.held_retries == 0
        handler.failing.clear()  # the redelivered a1 succeeds
        run.clock.advance(30)  # past the reconnect backoff, short of the retry's 60 s
        wait_until(lambda: run.consumer.connected)
        run.transport.batches.append([keyed("a", 1), keyed("a", 2)])  # the broker's redelivery
        wait_until(lambda: run.acked() == ["a1", "a2"])
    assert handler.calls == [("a1", 1), ("a1", 1), ("a2", 1)]
    assert run.transport.requeued == []  # the broker gave them back, not the consumer


def test_a_defer_waits_in_its_lane_without_counting_an_attempt():
    calls: list[tuple[str, int]] = []

    def handler(message):
        name = f"{message.body['key']}{message.body['seq']}"
        calls.append((name, message.attempt))
        if name == "a1" and len(calls) == 1:
            raise Defer(3.0)

    with Run(handler, [keyed("a", 1), keyed("a", 2)]) as run:
        wait_until(lambda: run.consumer.held_retries == 1)
        run.clock.advance(3.0)
        wait_until(lambda: run.acked() == ["a1", "a2"])
    assert calls == [("a1", 1), ("a1", 1), ("a2", 1)]
    assert run.consumer.counters.deferred == 1


def test_a_wait_longer_than_a_lane_holds_goes_through_the_broker():
    """RabbitMQ's consumer_timeout would close the channel: past 15 min, the broker waits."""

    def handler(message):
        raise Defer(3600.0)

    with Run(handler, [keyed("a", 1), keyed("a", 2)]) as run:
        wait_until(lambda: len(run.transport.retried) == 2)
        assert run.consumer.held_retries == 0
    assert [d.message_id for d, _, _ in run.transport.retried] == ["a1", "a2"]


def test_one_handler_slot_still_waits_in_lanes():
    """concurrency=1 runs handlers inline; strict order still needs the lanes."""
    handler = Recorder({"a1": 1})
    deliveries = [keyed("a", 1), keyed("a", 2), keyed("b", 1)]
    with Run(handler, deliveries, concurrency=1, retry_backoff_min=2.0) as run:
        wait_until(lambda: run.acked() == ["b1"])
        run.clock.advance(2.0)
        wait_until(lambda: run.acked() == ["b1", "a1", "a2"])
    assert run.transport.retried == []


def test_fetch_order_sends_the_retry_through_the_broker():
    handler = Recorder({"a1": 1})
    deliveries = [keyed("a", 1), keyed("a", 2)]
    with Run(handler, deliveries, partition_order="fetch") as run:
        wait_until(lambda: run.acked() == ["a2"] and len(run.transport.retried) == 1)
    ((retried, headers, delay),) = run.transport.retried
    assert retried.message_id == "a1"
    assert headers[ATTEMPT_HEADER] == 2
    assert delay == 1.0


def test_lane_retries_come_due_by_the_clock_earliest_first():
    clock = FakeClock()
    retries = LaneRetries(clock)
    first, second = object(), object()
    retries.wait(second, 3.0)  # type: ignore[arg-type]
    retries.wait(first, 1.0)  # type: ignore[arg-type]
    assert retries.wait_at_most(5.0) == 1.0
    assert retries.due() == []
    clock.advance(3.0)
    assert retries.due() == [first, second]
    assert len(retries) == 0
    assert retries.wait_at_most(5.0) == 5.0
    retries.wait(second, 3.0)  # type: ignore[arg-type]
    retries.wait(first, 1.0)  # type: ignore[arg-type]
    assert retries.take_all() == [first, second]
