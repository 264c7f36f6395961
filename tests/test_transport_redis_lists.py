"""The Redis list transport through its own interface, on the real Redis.

Each test uses its own queue (removed afterwards with every ``consumer-host:<queue>:*`` key).
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from consumer_host.errors import CopyRefused
from consumer_host.testing import FakeClock
from consumer_host.transports.redis_lists import RedisListTransport

from . import redis_transports
from .helpers import wait_until
from .redis_transports import fetch_until, made_by

queue = redis_transports.queue
client = redis_transports.client


@pytest.fixture
def transports(redis_broker):
    yield from made_by(RedisListTransport, redis_broker.url)


def envelope(body: dict, *, message_id: str | None = None, headers: dict | None = None) -> str:
    """What a kombu or Celery producer LPUSHes."""
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers or {},
            "properties": {
                "message_id": message_id or str(uuid.uuid4()),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "q"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def push(client, queue: str, *bodies: dict) -> None:
    for body in bodies:
        client.lpush(queue, envelope(body))


def bodies(deliveries) -> list:
    return [json.loads(d.body) for d in deliveries]


# -- slow start and limits ------------------------------------------------------------------------


def test_a_first_delivery_opens_the_window_without_waiting_for_its_settle(
    client, queue, transports
):
    push(client, queue, *({"n": n} for n in range(5)))
    transport = transports(queue, prefetch=10)

    first = transport.fetch(0.5, 10)
    assert bodies(first) == [{"n": 0}]  # one, before it is known to be no suspect
    assert bodies(transport.fetch(0.5, 10)) == [{"n": n} for n in range(1, 5)]


def test_fetch_takes_at_most_limit_and_never_more_unsettled_than_the_prefetch(
    client, queue, transports
):
    push(client, queue, *({"n": n} for n in range(8)))
    transport = transports(queue, prefetch=3)
    transport.ack(transport.fetch(0.5, 10)[0])

    two = transport.fetch(0.5, 2)
    assert len(two) == 2
    assert len(transport.fetch(0.5, 10)) == 1  # 3 unsettled now: the prefetch
    assert transport.fetch(0.05, 10) == []
    transport.ack(two[0])
    assert len(transport.fetch(0.5, 10)) == 1


def test_settlements_may_come_in_any_order(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue)
    transport.ack(transport.fetch(0.5, 10)[0])
    a, b, c = transport.fetch(0.5, 10)

    transport.dead_letter(c, {"why": "last first"})
    transport.ack(a)
    transport.retry(b, {"x-attempt": 2}, 60.0)

    assert client.llen(transport.keys_processing) == 0
    assert client.llen(f"{queue}.dlq") == 1
    assert client.zcard(transport.keys_delayed) == 1


def test_a_restart_of_consuming_keeps_the_window_open(client, queue, transports):
    """A pause and a resume: this process did not crash, nothing it takes is suspect."""
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue)
    transport.ack(transport.fetch(0.5, 10)[0])
    transport.stop_consuming()
    transport.start_consuming()

    assert len(transport.fetch(0.5, 10)) == 3


# -- input a producer got wrong -------------------------------------------------------------------


UNREADABLE = {
    "unknown content-encoding": (
        json.dumps(
            {
                "body": "hello",
                "content-encoding": "klingon",
                "content-type": "text/plain",
                "headers": {},
                "properties": {},
            }
        ).encode(),
        "unknown_content_encoding: ",
    ),
    "100,000-deep JSON": (
        b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "not_an_envelope: JSON nested too deeply",
    ),
    "not JSON": (b"\xff\xfe garbage \x00", "not_an_envelope: "),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
def test_unreadable_input_comes_out_as_a_defect_and_can_be_dead_lettered(
    case, client, queue, transports
):
    raw, reason = UNREADABLE[case]
    client.lpush(queue, raw)
    transport = transports(queue)

    (delivery,) = fetch_until(transport, 1)
    assert delivery.defect is not None
    assert delivery.defect.startswith(reason)
    assert delivery.body == raw

    cycle: dict = {}
    cycle["self"] = cycle  # headers json cannot dump must not stop the copy either
    transport.dead_letter(delivery, {"x-error": delivery.defect, "odd": cycle})
    (copy,) = client.lrange(f"{queue}.dlq", 0, -1)
    written = json.loads(copy)
    assert base64.b64decode(written["body"]) == raw
    assert written["headers"]["x-error"] == delivery.defect
    assert client.llen(transport.keys_processing) == 0


def test_a_retry_copy_with_headers_json_cannot_dump_is_written(client, queue, transports):
    push(client, queue, {"n": 1})
    transport = transports(queue)
    (delivery,) = fetch_until(transport, 1)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]

    transport.retry(delivery, {"deep": deep, "ok": 1}, 60.0)

    (copy,) = client.zrange(transport.keys_delayed, 0, -1)
    headers = json.loads(copy)["headers"]
    assert headers["ok"] == 1
    assert headers["deep"].startswith("<not serializable")


# -- a copy the broker cannot take ----------------------------------------------------------------


def test_a_dead_letter_key_of_the_wrong_type_refuses_the_copy_and_loses_nothing(
    client, queue, transports
):
    push(client, queue, {"n": 1})
    client.set(f"{queue}.dlq", "not a list")
    transport = transports(queue)
    (delivery,) = fetch_until(transport, 1)

    with pytest.raises(CopyRefused, match="holds a string"):
        transport.dead_letter(delivery, {"x-error": "boom"})

    assert client.get(f"{queue}.dlq") == b"not a list"
    assert client.llen(transport.keys_processing) == 0
    assert bodies(fetch_until(transport, 1)) == [{"n": 1}]  # back at the head of the queue


def test_a_delayed_key_of_the_wrong_type_refuses_the_retry_and_loses_nothing(
    client, queue, transports
):
    push(client, queue, {"n": 1})
    transport = transports(queue)
    client.set(transport.keys_delayed, "not a sorted set")
    (delivery,) = fetch_until(transport, 1)

    with pytest.raises(CopyRefused):
        transport.retry(delivery, {"x-attempt": 2}, 1.0)

    assert client.llen(queue) == 1
    assert client.llen(transport.keys_processing) == 0


# -- consumers that die or stall ------------------------------------------------------------------


def test_a_killed_consumers_message_comes_back_with_its_delivery_counted(client, queue, transports):
    push(client, queue, {"n": 1})
    client.lpush(queue, b"not json")  # a malformed entry moves too, unchanged
    first = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    (warmup,) = fetch_until(first, 1)
    assert warmup.delivery_count == 1
    first.ack(warmup)  # warm: the next fetch takes both
    client.lpush(queue, envelope({"n": 2}))
    held = fetch_until(first, 2)
    first.discard()  # the process died: no close, the keeper stops

    survivor = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    again = fetch_until(survivor, 1)
    survivor.ack(again[0])
    again += fetch_until(survivor, 1)
    assert sorted(d.body for d in again) == sorted(d.body for d in held)
    by_body = {d.body: d for d in again}
    assert by_body[b"not json"].defect is not None
    assert (by_body[b"not json"].delivery_count, by_body[held[1].body].delivery_count) == (1, 2)
    assert by_body[held[1].body].redelivered


def test_each_death_while_holding_a_message_counts_one_more_delivery(client, queue, transports):
    push(client, queue, {"n": 1})
    counts = []
    for _ in range(3):
        holder = transports(queue, alive_ttl=0.3, recover_interval=0.05)
        (delivery,) = fetch_until(holder, 1)
        counts.append(delivery.delivery_count)
        holder.discard()
        wait_until(lambda h=holder: not client.exists(h.keys_alive), what="alive key expired")
    assert counts == [1, 2, 3]


def test_a_stalled_consumer_registers_again_and_never_settles_what_it_no_longer_owns(
    client, queue, transports
):
    push(client, queue, {"n": 1})
    stalled = transports(queue, prefetch=1, alive_ttl=0.3, recover_interval=0.05)
    (held,) = fetch_until(stalled, 1)

    # A stall (GC pause, SIGSTOP, frozen VM): the keeper thread stops refreshing too.
    stalled._keeper_stop.set()
    wait_until(lambda: not client.exists(stalled.keys_alive), what="alive key expired")
    other = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    other.stop_consuming()  # it only sweeps: its fetches take nothing
    wait_until(
        lambda: other.fetch(0, 1) == [] and client.llen(queue) == 1,
        what="the other consumer swept the stalled one",
    )

    # It comes back and dead-letters what it held: no longer its own, so nothing happens and
    # the recovered original is handled again.
    stalled.dead_letter(held, {"x-error": "late"})
    assert client.llen(f"{queue}.dlq") == 0
    assert client.llen(queue) == 1

    # It registers again before fetching, so its next death is swept like any other.
    (again,) = fetch_until(stalled, 1)
    assert again.delivery_count == 2
    assert client.sismember(stalled.keys_consumers, stalled.id)
    stalled.discard()
    wait_until(
        lambda: other.fetch(0, 1) == [] and client.llen(queue) == 1,
        what="the second death was swept",
    )


def test_a_stalled_consumers_retries_and_acks_change_nothing(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(3)))
    stalled = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    stalled.ack(fetch_until(stalled, 1)[0])
    first, second = fetch_until(stalled, 2)
    stalled._keeper_stop.set()
    wait_until(lambda: not client.exists(stalled.keys_alive), what="alive key expired")
    other = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    other.stop_consuming()
    wait_until(lambda: other.fetch(0, 1) == [] and client.llen(queue) == 2, what="swept")

    stalled.retry(first, {"x-attempt": 2}, 0.0)
    stalled.ack(second)

    assert client.zcard(stalled.keys_delayed) == 0
    assert client.llen(queue) == 2


def test_close_gives_back_unsettled_messages_uncounted_in_their_order(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue)
    transport.ack(fetch_until(transport, 1)[0])
    fetch_until(transport, 3)
    transport.close()

    again = transports(queue)
    first = fetch_until(again, 1)
    again.ack(first[0])
    rest = fetch_until(again, 2)
    assert bodies(first + rest) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert {d.delivery_count for d in first + rest} == {1}


def test_requeue_gives_back_in_order(client, queue, transports):
    push(client, queue, *({"n": n} for n in range(4)))
    transport = transports(queue)
    transport.ack(fetch_until(transport, 1)[0])
    held = fetch_until(transport, 3)
    transport.requeue(held)
    transport.ack(fetch_until(transport, 1, limit=1)[0])  # the first of them, at the head
    assert bodies(fetch_until(transport, 2)) == [{"n": 2}, {"n": 3}]


# -- retries and time -----------------------------------------------------------------------------


def test_a_retry_comes_back_when_due_by_the_transports_clock(client, queue, transports):
    clock = FakeClock(start=1000.0)
    push(client, queue, {"n": 1})
    transport = transports(queue, clock=clock)
    (delivery,) = fetch_until(transport, 1)

    transport.retry(delivery, {"x-attempt": 2}, 30.0)
    assert transport.fetch(0.05, 10) == []
    clock.advance(29.0)
    assert transport.fetch(0.05, 10) == []
    clock.advance(1.5)
    (again,) = transport.fetch(0.5, 10)
    assert json.loads(again.body) == {"n": 1}
    assert again.headers == {"x-attempt": 2}


def test_a_short_retry_is_not_held_back_by_the_polling_interval(client, queue, transports):
    push(client, queue, {"n": 1})
    transport = transports(queue)
    (delivery,) = fetch_until(transport, 1)
    transport.retry(delivery, {"x-attempt": 2}, 0.2)
    began = time.monotonic()
    fetch_until(transport, 1, timeout=5)
    assert time.monotonic() - began < 1.5


def test_recovery_moves_an_entry_cjson_cannot_read_unchanged(client, queue, transports):
    deep = b'{"body": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    client.lpush(queue, deep)
    holder = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    fetch_until(holder, 1)
    holder.discard()

    survivor = transports(queue, alive_ttl=0.3, recover_interval=0.05)
    (again,) = fetch_until(survivor, 1)
    assert again.body == deep
    assert again.defect == "not_an_envelope: JSON nested too deeply"


# -- producing ------------------------------------------------------------------------------------


def test_the_list_producer_writes_kombus_envelope_byte_for_byte(client, queue, redis_broker):
    from kombu import Connection, Producer

    from consumer_host.transports.redis_lists import RedisListProducer

    kwargs = {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"h": 1},
        "message_id": "m-1",
    }
    with Connection(redis_broker.url) as conn:
        Producer(conn.default_channel).publish(
            b'{"n": 1}', exchange="", routing_key=queue, delivery_mode=2, retry=False, **kwargs
        )
    producer = RedisListProducer(redis_broker.url)
    try:
        producer.publish(queue, b'{"n": 1}', **kwargs)
    finally:
        producer.close()

    ours, kombus = client.lrange(queue, 0, -1)  # LPUSH: the newest first
    tag = json.loads(ours)["properties"]["delivery_tag"]
    kombu_tag = json.loads(kombus)["properties"]["delivery_tag"]
    assert ours.replace(tag.encode(), kombu_tag.encode()) == kombus


def test_what_the_list_producer_writes_is_read_back_whole(client, queue, redis_broker, transports):
    from consumer_host.transports.redis_lists import RedisListProducer

    producer = RedisListProducer(redis_broker.url)
    try:
        producer.publish(
            queue,
            b"\x00\xff raw",
            content_type="application/octet-stream",
            content_encoding="binary",
            headers={"h": [1, 2]},
            message_id="m-2",
        )
    finally:
        producer.close()
    (delivery,) = fetch_until(transports(queue), 1)
    assert (delivery.body, delivery.headers, delivery.message_id) == (
        b"\x00\xff raw",
        {"h": [1, 2]},
        "m-2",
    )
    assert delivery.defect is None


def test_a_reconnect_in_the_same_process_counts_no_delivery(client, queue, transports):
    """A broken link is not a crash: what this process held comes back uncounted."""
    push(client, queue, {"n": 1})
    transport = transports(queue)
    (held,) = fetch_until(transport, 1)
    transport.discard()  # the link broke; the process lives
    transport.connect()
    transport.start_consuming()
    (again,) = fetch_until(transport, 1)
    assert again.body == held.body
    assert again.delivery_count == 1
    assert not again.redelivered
