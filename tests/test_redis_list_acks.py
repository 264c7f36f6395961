"""Redis list acks, batched: one script call per batch, before the next fetch or after 50 ms by
the transport's clock, before anything that reads the processing list; kept when the send fails;
lost to a crash only as redeliveries.

The transport tests run on the real Redis with a :class:`FakeClock`, so the flusher thread never
sends a batch unless the test moves the clock.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from redis import exceptions as redis_errors

from consumer_host.errors import BrokerUnavailable
from consumer_host.testing import FakeClock
from consumer_host.transports.redis_list_acks import MAX_ACK_DELAY, ListAcks
from consumer_host.transports.redis_lists import RedisListTransport

from . import redis_transports
from .brokers import REDIS_URL, unique_queue
from .helpers import wait_until
from .redis_transports import fetch_until, made_by
from .test_cli import APPS, start
from .test_concurrency_kill import ACK_SLACK, read
from .test_transport_redis_lists import bodies, envelope, push

queue = redis_transports.queue
client = redis_transports.client


@pytest.fixture
def transports(redis_broker):
    yield from made_by(RedisListTransport, redis_broker.url)


# -- the batch alone ------------------------------------------------------------------------------


class ScriptClient:
    """Stands in for redis-py: records each call of the ack script; raises while ``down``."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[list[str], list[bytes]]] = []

    def register_script(self, source: str) -> Any:
        def call(keys: list[str], args: list[bytes]) -> int:
            if self.down:
                raise redis_errors.ConnectionError("Connection closed by server.")
            self.sent.append((keys, list(args)))
            return len(args)

        return call


def test_a_batch_goes_out_in_one_call_once_it_waited_the_max_delay_by_the_clock():
    clock = FakeClock()
    redis = ScriptClient()
    acks = ListAcks("processing", clock)
    acks.start(redis, "acks:test")  # type: ignore[arg-type]
    try:
        acks.add(b"a")
        acks.add(b"b")
        wait_until(lambda: clock.waits, what="the flusher waiting for the batch to age")
        assert clock.waits[0] == pytest.approx(MAX_ACK_DELAY)

        clock.advance(0.04)
        assert redis.sent == []  # 40 ms old: not yet

        clock.advance(0.02)
        wait_until(lambda: redis.sent, what="the batch sent")
        assert redis.sent == [(["processing"], [b"a", b"b"])]
        assert len(acks) == 0
    finally:
        acks.stop()


def test_handles_whose_send_failed_are_sent_first_on_the_next_connection():
    acks = ListAcks("processing", FakeClock())
    dropped = ScriptClient(down=True)
    acks.start(dropped, "acks:test")  # type: ignore[arg-type]
    acks.add(b"a")
    acks.add(b"b")
    with pytest.raises(redis_errors.ConnectionError):
        acks.flush()
    acks.stop()  # the link is dropped
    acks.add(b"c")

    fresh = ScriptClient()
    acks.start(fresh, "acks:test")  # type: ignore[arg-type]
    acks.flush()
    acks.stop()
    assert fresh.sent == [(["processing"], [b"a", b"b", b"c"])]


def test_the_owner_waits_for_a_send_the_flusher_has_on_the_wire():
    """Else a fetch or a recovery could overtake the flusher's LREMs."""
    clock = FakeClock()
    on_the_wire = threading.Event()
    release = threading.Event()
    order: list[str] = []

    class SlowClient:
        def register_script(self, source: str) -> Any:
            def call(keys: list[str], args: list[bytes]) -> int:
                on_the_wire.set()
                release.wait(10)
                order.append("flusher sent")
                return len(args)

            return call

    acks = ListAcks("processing", clock)
    acks.start(SlowClient(), "acks:test")  # type: ignore[arg-type]
    try:
        acks.add(b"a")
        wait_until(lambda: clock.waits, what="the flusher waiting")
        clock.advance(MAX_ACK_DELAY)
        wait_until(on_the_wire.is_set, what="the flusher sending")
        owner = threading.Thread(target=lambda: (acks.flush(), order.append("owner flushed")))
        owner.start()
        release.set()
        owner.join(10)
        assert order == ["flusher sent", "owner flushed"]
    finally:
        acks.stop()


# -- through the transport, on the real Redis -----------------------------------------------------


def count_ack_calls(monkeypatch: pytest.MonkeyPatch, transport: Any) -> list[tuple[Any, ...]]:
    """Every command that removes from ``transport``'s processing list: LREM, or the ack script
    (an EVALSHA whose one key is the processing list)."""
    calls: list[tuple[Any, ...]] = []
    redis = transport._redis
    real = redis.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        if name == "LREM" or (
            name in ("EVALSHA", "EVAL") and args[2] == 1 and args[3] == transport.keys_processing
        ):
            calls.append(args)
        return real(*args, **options)

    monkeypatch.setattr(redis, "execute_command", counting)
    return calls


def test_acks_wait_for_the_next_fetch_and_go_in_one_round_trip(
    client, queue, transports, monkeypatch
):
    push(client, queue, *({"n": n} for n in range(7)))
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    held = fetch_until(transport, 6)  # the fetch sent the first one's ack
    calls = count_ack_calls(monkeypatch, transport)

    for delivery in held[:5]:
        transport.ack(delivery)
    assert calls == []
    assert client.llen(transport.keys_processing) == 6  # nothing sent yet

    transport.fetch(0, 10)
    assert len(calls) == 1
    assert calls[0][4:] == tuple(d.handle for d in held[:5])
    assert client.lrange(transport.keys_processing, 0, -1) == [held[5].handle]


def test_the_flusher_sends_a_batch_after_the_max_delay_while_no_fetch_comes(
    client, queue, transports
):
    clock = FakeClock()
    push(client, queue, *({"n": n} for n in range(3)))
    transport = transports(queue, clock=clock)
    transport.ack(fetch_until(transport, 1)[0])
    first, second = fetch_until(transport, 2)
    transport.ack(first)

    clock.advance(MAX_ACK_DELAY)  # a long handler holds the connection thread meanwhile
    wait_until(lambda: client.llen(transport.keys_processing) == 1, what="the batch sent")
    assert client.lrange(transport.keys_processing, 0, -1) == [second.handle]


def test_a_failed_ack_goes_out_on_the_next_connection_before_its_recovery(
    client, queue, transports, monkeypatch
):
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    a, b, c = fetch_until(transport, 3)
    transport.ack(a)
    transport.ack(b)
    redis = transport._redis
    real = redis.execute_command

    def dropped(*args: Any, **options: Any) -> Any:
        if str(args[0]).upper() == "EVALSHA" and args[3] == transport.keys_processing:
            raise redis_errors.ConnectionError("Connection closed by server.")
        return real(*args, **options)

    monkeypatch.setattr(redis, "execute_command", dropped)
    with pytest.raises(BrokerUnavailable):
        transport.fetch(0, 10)
    transport.discard()  # the consumer drops the link and connects again
    transport.connect()
    transport.start_consuming()

    (again,) = fetch_until(transport, 1)  # only the unfinished one comes back, uncounted
    assert again.body == c.body
    assert again.delivery_count == 1
    assert transport.fetch(0.05, 10) == []


def test_stop_consuming_sends_the_waiting_acks(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(3)))
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    first, second = fetch_until(transport, 2)
    transport.ack(first)

    transport.stop_consuming()  # a drain begins
    assert client.lrange(transport.keys_processing, 0, -1) == [second.handle]


def test_close_sends_the_waiting_acks_before_it_gives_back_the_rest(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(3)))
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    first, second = fetch_until(transport, 2)
    transport.ack(first)

    transport.close()
    assert client.lrange(queue, 0, -1) == [second.handle]  # the finished one is not given back


def test_a_requeue_and_a_copy_send_the_waiting_acks_first(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    a, b, c = fetch_until(transport, 3)

    transport.ack(a)
    transport.requeue([b])
    assert client.lrange(transport.keys_processing, 0, -1) == [c.handle]

    (b,) = fetch_until(transport, 1, limit=1)
    transport.ack(b)
    transport.dead_letter(c, {"x-error": "boom"})
    assert client.llen(transport.keys_processing) == 0
    assert client.llen(f"{queue}.dlq") == 1


def test_a_death_before_the_send_redelivers_the_finished_messages_and_loses_none(
    client, queue, transports
):
    push(client, queue, *({"n": n} for n in range(4)))
    holder = transports(queue, clock=FakeClock(), alive_ttl=0.3)
    holder.ack(fetch_until(holder, 1)[0])
    a, b, c = fetch_until(holder, 3)
    holder.ack(a)
    holder.ack(b)
    holder.discard()  # killed: its acks never went out
    wait_until(lambda: not client.exists(holder.keys_alive), what="alive key expired")

    survivor = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    again = fetch_until(survivor, 1)
    survivor.ack(again[0])
    again += fetch_until(survivor, 2)
    assert sorted(json.dumps(x) for x in bodies(again)) == sorted(
        json.dumps(x) for x in bodies([a, b, c])
    )
    assert {d.delivery_count for d in again} == {2}


def test_a_suspects_ack_goes_at_once_with_the_batch(client, queue, transports):
    """A batch-mate that kills the process must not count a delivery against a finished
    suspect: its recovery would, each time, until max_deliveries dead-letters it."""
    push(client, queue, {"n": 0}, {"n": 1})
    client.lpush(queue, '{"x-delivery-count":1,' + envelope({"n": 2})[1:])
    transport = transports(queue, clock=FakeClock())
    transport.ack(fetch_until(transport, 1)[0])
    first, suspect = fetch_until(transport, 2)
    assert suspect.delivery_count == 2
    transport.ack(first)
    assert client.llen(transport.keys_processing) == 2  # a first delivery's ack waits

    transport.ack(suspect)
    assert client.llen(transport.keys_processing) == 0


# -- a SIGKILLed process --------------------------------------------------------------------------


def test_sigkill_of_a_one_at_a_time_consumer_loses_nothing_and_redelivers_only_unacked(
    redis_broker, tmp_path
):
    """Inline handlers: every ack waits in the batch until the next fetch or 50 ms."""
    queue = unique_queue()
    total = 300
    redis_broker.publish_many(queue, [{"n": n} for n in range(total)])
    ledger = tmp_path / "ledger"
    env = {
        "CONSUMER_HOST_BROKER_URL": REDIS_URL,
        "CONCURRENT_QUEUE": queue,
        "CONCURRENT_LEDGER": str(ledger),
        "CONCURRENT_K": "1",
    }
    first = start("run", str(APPS / "concurrent_app.py"), env=env)
    try:
        wait_until(lambda: len(read(ledger)) >= 100, timeout=30, what="a third handled")
        killed_at = time.time()
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start("run", str(APPS / "concurrent_app.py"), env=env)
    try:
        wait_until(
            lambda: {n for n, _ in read(ledger)} >= set(range(total)),
            timeout=60,
            what="every message handled",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    rows = read(ledger)
    counts = Counter(n for n, _ in rows)
    assert set(counts) == set(range(total))  # nothing lost
    first_finish: dict[int, float] = {}
    for n, at in rows:
        first_finish.setdefault(n, at)
    again = [n for n, c in counts.items() if c > 1]
    stale = [n for n in again if first_finish[n] < killed_at - ACK_SLACK]
    assert stale == [], f"finished long before the kill, yet handled again: {stale}"
