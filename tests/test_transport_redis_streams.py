"""The Redis Streams transport through its own interface, on the real Redis.

Each test uses its own stream (removed afterwards with every ``consumer-host:<queue>:*`` key).
"""

from __future__ import annotations

import json
import time

import pytest

from consumer_host.errors import CopyRefused
from consumer_host.transports.redis_streams import RedisStreamsTransport, entry_fields

from . import redis_transports
from .brokers import STREAMS_URL
from .redis_transports import fetch_until, made_by

queue = redis_transports.queue
client = redis_transports.client


@pytest.fixture
def transports(redis_broker):
    yield from made_by(RedisStreamsTransport, STREAMS_URL)


def add(client, queue: str, *bodies: dict) -> list[bytes]:
    return [
        client.xadd(
            queue, entry_fields(json.dumps(b).encode(), "application/json", "utf-8", {}, None)
        )
        for b in bodies
    ]


def pending_on(client, queue: str, consumer: str) -> list[bytes]:
    return [
        p["message_id"]
        for p in client.xpending_range(
            queue, queue, min="-", max="+", count=100, consumername=consumer
        )
    ]


# -- slow start -----------------------------------------------------------------------------------


def test_a_first_delivery_opens_the_window_without_waiting_for_its_settle(
    client, queue, transports
):
    add(client, queue, *({"n": n} for n in range(5)))
    transport = transports(queue, prefetch=10)

    (first,) = transport.fetch(0.5, 10)
    assert json.loads(first.body) == {"n": 0}  # one, before it is known to be no suspect
    assert [json.loads(d.body) for d in transport.fetch(0.5, 10)] == [{"n": n} for n in range(1, 5)]


def test_fetch_takes_at_most_limit(client, queue, transports):
    add(client, queue, *({"n": n} for n in range(6)))
    transport = transports(queue)
    transport.ack(fetch_until(transport, 1)[0])
    assert len(transport.fetch(0.5, 2)) == 2


# -- input a producer got wrong -------------------------------------------------------------------


UNREADABLE = {
    "no body": (
        {"payload": b"x", "content-type": b"text/plain"},
        "missing_body: the entry has no body field",
    ),
    "100,000-deep headers": (
        {"body": b"{}", "headers": b"[" * 100_000 + b"]" * 100_000},
        "bad_headers: JSON nested too deeply",
    ),
    "headers not an object": ({"body": b"{}", "headers": b"[1, 2]"}, "bad_headers: "),
    "non-UTF-8 content type": (
        {"body": b"{}", "content-type": b"application/\xff\xfe"},
        "invalid_utf8: field content-type",
    ),
    "non-UTF-8 headers": (
        {"body": b"{}", "headers": b'{"a": "\xff"}'},
        "invalid_utf8: field headers",
    ),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
def test_unreadable_entries_come_out_as_defects_and_can_be_dead_lettered(
    case, client, queue, transports
):
    fields, reason = UNREADABLE[case]
    client.xadd(queue, fields)
    transport = transports(queue)

    (delivery,) = fetch_until(transport, 1)
    assert delivery.defect is not None
    assert delivery.defect.startswith(reason)
    assert delivery.body == fields.get("body", delivery.body)

    transport.dead_letter(delivery, {"x-error": delivery.defect})
    transport.fetch(0, 1)  # flushes nothing, settles nothing: the copy is already there
    ((_, copy),) = client.xrange(f"{queue}.dlq")
    assert copy[b"body"] == delivery.body
    assert json.loads(copy[b"headers"])["x-error"] == delivery.defect
    assert pending_on(client, queue, transport.consumer) == []


# -- a copy the broker cannot take, or that is no longer ours -------------------------------------


def test_a_dead_letter_key_of_the_wrong_type_refuses_the_copy_and_loses_nothing(
    client, queue, transports
):
    (entry,) = add(client, queue, {"n": 1})
    client.set(f"{queue}.dlq", "not a stream")
    transport = transports(queue)
    (delivery,) = fetch_until(transport, 1)

    with pytest.raises(CopyRefused, match="holds a string"):
        transport.dead_letter(delivery, {"x-error": "boom"})

    assert client.get(f"{queue}.dlq") == b"not a stream"
    assert pending_on(client, queue, transport.consumer) == [entry]  # unacked: claimed later


def test_a_delayed_key_of_the_wrong_type_refuses_the_retry_and_loses_nothing(
    client, queue, transports
):
    (entry,) = add(client, queue, {"n": 1})
    transport = transports(queue)
    client.set(transport.keys_delayed, "not a sorted set")
    (delivery,) = fetch_until(transport, 1)

    with pytest.raises(CopyRefused):
        transport.retry(delivery, {"x-attempt": 2}, 1.0)

    assert pending_on(client, queue, transport.consumer) == [entry]
    assert client.keys(f"consumer-host:{queue}:retry:*") == []


def test_an_entry_claimed_by_another_consumer_is_not_copied_by_the_first(client, queue, transports):
    (entry,) = add(client, queue, {"n": 1})
    slow = transports(queue)
    (delivery,) = fetch_until(slow, 1)
    client.xclaim(queue, queue, "someone-else", 0, [entry])

    slow.dead_letter(delivery, {"x-error": "late"})
    slow.retry(delivery, {"x-attempt": 2}, 0.0)

    assert client.exists(f"{queue}.dlq") == 0
    assert client.zcard(slow.keys_delayed) == 0
    assert pending_on(client, queue, "someone-else") == [entry]


# -- a message that kills the process -------------------------------------------------------------


def test_only_the_entry_in_the_handler_counts_deliveries_when_it_kills_the_process(
    client, queue, transports
):
    add(client, queue, {"warm-up": True})
    first = transports(queue, claim_after=0.3)
    first.ack(fetch_until(first, 1)[0])
    entries = add(client, queue, *({"n": n} for n in range(10)))
    killer = entries[0]
    assert len(fetch_until(first, 10)) == 10  # a whole batch held...
    first.discard()  # ...when the first of it killed the process

    handled: dict[bytes, int] = {}
    killer_counts: list[int] = []
    deadline = time.monotonic() + 60

    def done() -> bool:
        return time.monotonic() > deadline or (
            len(handled) == 9 and bool(killer_counts) and killer_counts[-1] > 4
        )

    while not done():
        transport = transports(queue, claim_after=0.3)  # the restarted process
        dead = False
        while not dead and not done():
            for delivery in transport.fetch(0.1, 10):
                if delivery.handle != killer:
                    handled[delivery.handle] = delivery.delivery_count
                    transport.ack(delivery)
                elif delivery.delivery_count > 4:  # what the consumer does past max_deliveries
                    killer_counts.append(delivery.delivery_count)
                    transport.dead_letter(delivery, {"x-error": "kills the process"})
                else:
                    killer_counts.append(delivery.delivery_count)
                    transport.discard()  # it killed the process again
                    dead = True
                    break

    assert sorted(handled) == sorted(entries[1:])
    assert max(handled.values()) <= 2, handled  # batch-mates are not blamed
    assert killer_counts == [2, 3, 4, 5]  # one more each time it was in the handler
    ((_, dead_letter),) = client.xrange(f"{queue}.dlq")
    assert json.loads(dead_letter[b"headers"]) == {"x-error": "kills the process"}


# -- producing ------------------------------------------------------------------------------------


def test_the_streams_producer_writes_what_the_transport_reads(client, queue, transports):
    from consumer_host.transports.redis_streams import StreamsProducer

    producer = StreamsProducer(STREAMS_URL)
    try:
        producer.publish(
            queue,
            b'{"n": 1}',
            content_type="application/json",
            content_encoding="utf-8",
            headers={"h": 1},
            message_id="m-1",
        )
    finally:
        producer.close()
    (delivery,) = fetch_until(transports(queue), 1)
    assert (delivery.body, delivery.headers, delivery.message_id) == (b'{"n": 1}', {"h": 1}, "m-1")
    assert (delivery.content_type, delivery.content_encoding) == ("application/json", "utf-8")
    assert delivery.defect is None


# -- retries and time -----------------------------------------------------------------------------


def test_a_retry_comes_back_when_due_by_the_transports_clock(client, queue, transports):
    from consumer_host.testing import FakeClock

    clock = FakeClock(start=1000.0)
    add(client, queue, {"n": 1})
    transport = transports(queue, clock=clock)
    (delivery,) = fetch_until(transport, 1)

    transport.retry(delivery, {"x-attempt": 2}, 30.0)
    assert transport.fetch(0.05, 10) == []
    clock.advance(29.0)
    assert transport.fetch(0.05, 10) == []
    clock.advance(1.5)
    (again,) = fetch_until(transport, 1)
    assert json.loads(again.body) == {"n": 1}
    assert again.headers == {"x-attempt": 2}
    assert client.keys(f"consumer-host:{queue}:retry:*") == []


def test_requeue_gives_back_only_what_is_still_ours(client, queue, transports):
    add(client, queue, {"n": 1}, {"n": 2})
    transport = transports(queue)
    transport.ack(fetch_until(transport, 1)[0])
    client.xadd(queue, entry_fields(b'{"n": 3}', "application/json", "utf-8", {}, None))
    held = fetch_until(transport, 2)
    client.xclaim(queue, queue, "someone-else", 0, [held[1].handle])

    transport.requeue(held)

    assert pending_on(client, queue, transport.consumer) == []
    assert pending_on(client, queue, "someone-else") == [held[1].handle]
    (back,) = fetch_until(transport, 1)
    assert back.body == held[0].body


def test_an_ack_reaches_redis_within_50_ms_while_the_owner_is_busy(redis_broker):
    """The owner thread acks and then sits in a long handler (no fetch): the batch still goes."""
    from consumer_host.transports.base import QueueSpec
    from consumer_host.transports.redis_streams import RedisStreamsTransport

    from .brokers import STREAMS_URL, unique_queue
    from .helpers import wait_until

    queue = unique_queue()
    redis_broker.queues.add(queue)
    redis_broker.kind = "streams"
    redis_broker.publish(queue, {"n": 1})
    transport = RedisStreamsTransport(
        STREAMS_URL, QueueSpec(queue=queue, dead_letter=f"{queue}.dlq"), instance="acks"
    )
    transport.connect()
    transport.start_consuming()
    try:
        (delivery,) = transport.fetch(1.0, 10)
        client = transport._client()
        assert client.xpending(queue, queue)["pending"] == 1
        transport.ack(delivery)
        # No fetch, no close: only the flusher can send it.
        wait_until(lambda: client.xpending(queue, queue)["pending"] == 0, timeout=0.5)
    finally:
        transport.close()
