"""The kombu transport on a real RabbitMQ, through its interface: nothing is lost."""

from __future__ import annotations

import sys
import time

import pytest
from kombu import Producer

from consumer_host.errors import BrokerUnavailable, CopyRefused
from consumer_host.testing import FakeClock
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.kombu_producer import KombuProducer
from consumer_host.transports.kombu_transport import KombuTransport
from consumer_host.transports.suspects import SUSPECT_GRACE

from .brokers import unique_queue


@pytest.fixture
def queue(amqp_broker):
    name = unique_queue("amqp")
    amqp_broker.queues.add(name)
    return name


def transport_for(broker, queue: str, **spec) -> KombuTransport:
    transport = KombuTransport(
        broker.url, QueueSpec(queue=queue, dead_letter=f"{queue}.dlq", **spec), heartbeat=10
    )
    transport.connect()
    transport.start_consuming()
    return transport


def fetch_until(transport: KombuTransport, count: int, limit: int = 10, within: float = 5.0):
    got = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        got += transport.fetch(0.2, limit)
    return got


def bodies(broker, queue: str) -> list[bytes]:
    return sorted(body for body, _, _ in broker.drain(queue))


def test_out_of_order_acks_never_ack_an_unfinished_tag(amqp_broker, queue):
    amqp_broker.publish_many(queue, [0, 1, 2, 3])
    transport = transport_for(amqp_broker, queue)
    first, *rest = fetch_until(transport, 4)  # first deliveries: no slow start
    transport.ack(first)
    assert [d.body for d in rest] == [b"1", b"2", b"3"]
    transport.ack(rest[2])
    transport.ack(rest[1])  # finished before rest[0], which is still in its handler
    time.sleep(0.3)  # the keeper flushes due acks
    transport.discard()  # a crash: nothing more reaches the broker
    assert bodies(amqp_broker, queue) == [b"1"], "only the unfinished message comes back"


def test_a_gap_closed_later_acks_everything(amqp_broker, queue):
    amqp_broker.publish_many(queue, [0, 1, 2, 3])
    transport = transport_for(amqp_broker, queue)
    first, *rest = fetch_until(transport, 4)
    transport.ack(first)
    transport.ack(rest[2])
    transport.retry(rest[1], {"x-attempt": 2}, 60.0)  # a copy in the middle
    transport.ack(rest[0])
    time.sleep(0.3)
    transport.discard()
    assert bodies(amqp_broker, queue) == []


def test_ack_reaches_the_broker_within_50ms_while_the_owner_is_busy(amqp_broker, queue):
    amqp_broker.publish_many(queue, [0, 1])
    transport = transport_for(amqp_broker, queue)
    transport.ack(fetch_until(transport, 1)[0])
    fetch_until(transport, 1)  # the next message is "in a long handler": no fetch for a while
    time.sleep(0.15)
    transport.discard()
    assert bodies(amqp_broker, queue) == [b"1"]


def test_first_deliveries_open_the_window_at_once(amqp_broker, queue):
    amqp_broker.publish_many(queue, list(range(5)))
    transport = transport_for(amqp_broker, queue)
    assert len(fetch_until(transport, 5, within=2.0)) == 5, "no slow start for first deliveries"
    transport.close()


def quorum_suspects(amqp_broker, count: int) -> tuple[str, QueueSpec]:
    """A quorum queue whose ``count`` messages were all handed to a process that died."""
    queue = unique_queue("suspects")
    amqp_broker.queues.add(queue)
    spec = QueueSpec(
        queue=queue,
        dead_letter=f"{queue}.dlq",
        prefetch=10,
        queue_arguments={"x-queue-type": "quorum"},
    )
    crashed = KombuTransport(amqp_broker.url, spec, heartbeat=0)
    crashed.connect()
    for n in range(count):
        Producer(amqp_broker.conn.default_channel).publish(
            {"n": n}, routing_key=queue, serializer="json", delivery_mode=2
        )
    crashed.start_consuming()
    assert len(fetch_until(crashed, count)) == count
    crashed.discard()  # the process died: every one of them comes back counted
    return queue, spec


def test_suspects_come_one_at_a_time_until_one_second_of_them_has_passed(amqp_broker):
    """After a crash on a quorum queue, only one redelivered message runs at first (if it kills
    the process again, it alone is counted again); a second later the window opens anyway."""
    _queue, spec = quorum_suspects(amqp_broker, 4)
    clock = FakeClock()
    transport = KombuTransport(amqp_broker.url, spec, heartbeat=0, clock=clock)
    transport.connect()
    transport.start_consuming()
    first = fetch_until(transport, 1)
    assert len(first) == 1
    assert first[0].delivery_count == 2
    assert fetch_until(transport, 1, within=0.5) == [], "a second suspect while one runs"
    clock.advance(SUSPECT_GRACE)  # the suspect has run alone for a second
    assert len(fetch_until(transport, 3, within=3.0)) == 3, "the other three at once"
    transport.close()


def deep_table(depth: int) -> dict:
    table: object = "leaf"
    for _ in range(depth):
        table = {"a": table}
    return {"deep": table, "kept": "yes"}


def test_unparseable_input_arrives_as_a_defect_and_consuming_goes_on(amqp_broker, queue):
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # for the test's own publisher only
    try:
        amqp_broker.publish_raw(queue, b'{"d":1}', "application/json", headers=deep_table(1500))
    finally:
        sys.setrecursionlimit(limit)
    amqp_broker.publish_raw(
        queue, b"\x1f\x8b", "application/json", content_encoding="x-gzip-unknown"
    )
    amqp_broker.publish_raw(
        queue, b"zz", "application/json", headers={"compression": "application/x-unknown"}
    )
    amqp_broker.publish(queue, {"good": True})
    transport = transport_for(amqp_broker, queue)
    seen = []
    for _ in range(40):
        for delivery in transport.fetch(0.1, 10):  # raises nothing, however often it is called
            seen.append(delivery)
            if delivery.defect:
                transport.dead_letter(delivery, {**delivery.headers, "x-error": delivery.defect})
            else:
                transport.ack(delivery)
        if len(seen) == 4:
            break
    deep, encoded, compressed, good = seen
    assert deep.defect.startswith("unparseable_properties: RecursionError")
    assert deep.body == b'{"d":1}'
    assert deep.headers["kept"] == "yes"
    assert encoded.defect is None
    assert encoded.content_encoding == "x-gzip-unknown"
    assert encoded.body == b"\x1f\x8b", "the raw bytes, for the consumer to judge"
    assert compressed.defect.startswith("undecompressable")
    assert good.body == b'{"good": true}'
    transport.close()
    dead = amqp_broker.drain(f"{queue}.dlq")
    assert {body for body, _, _ in dead} == {b'{"d":1}', b"zz"}
    assert amqp_broker.depth(queue) == 0


def test_a_deleted_dead_letter_queue_is_declared_again(amqp_broker, queue):
    amqp_broker.publish(queue, {"n": 1})
    transport = transport_for(amqp_broker, queue)
    delivery = fetch_until(transport, 1)[0]
    amqp_broker.conn.channel().queue_delete(f"{queue}.dlq")
    transport.dead_letter(delivery, {"x-error": "boom"})
    transport.close()
    assert len(amqp_broker.drain(f"{queue}.dlq")) == 1
    assert amqp_broker.depth(queue) == 0


def test_a_full_dead_letter_queue_keeps_the_original(amqp_broker, queue):
    channel = amqp_broker.conn.channel()
    channel.queue_declare(
        queue=f"{queue}.dlq",
        durable=True,
        auto_delete=False,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    amqp_broker.publish(queue, {"n": 1})
    amqp_broker.publish(queue, {"n": 2})
    transport = transport_for(amqp_broker, queue)  # the operator's DLQ is used as it is
    first, second = fetch_until(transport, 2)
    with pytest.raises(CopyRefused, match="nacked"):
        transport.dead_letter(first, {"x-error": "boom"})
    transport.ack(second)
    again = fetch_until(transport, 1)  # the channel still works; the original came back
    assert again[0].body == b'{"n": 1}'
    assert again[0].redelivered
    transport.ack(again[0])
    transport.close()
    assert amqp_broker.depth(queue) == 0


def test_after_a_refused_copy_the_next_goes_out_on_a_new_channel(amqp_broker, queue):
    """RabbitMQ 3.10 keeps a quorum queue's leader per channel; a channel that met the queue
    while its leader's node was down went on refusing for as long as that node stayed down
    (tests/cluster). So a refusal replaces the publishing channel, and the next copy works."""
    channel = amqp_broker.conn.channel()
    channel.queue_declare(
        queue=f"{queue}.dlq",
        durable=True,
        auto_delete=False,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    amqp_broker.publish(queue, {"n": 1})
    amqp_broker.publish(queue, {"n": 2})
    transport = transport_for(amqp_broker, queue)
    first, second = fetch_until(transport, 2)
    refused_on = transport._routed.channel
    with pytest.raises(CopyRefused, match="nacked"):
        transport.dead_letter(first, {"x-error": "boom"})
    assert transport._routed.channel is not refused_on
    assert not refused_on.is_open
    transport.retry(second, {"x-attempt": 2}, 60)  # a copy on the new channel, held 60 s
    transport.close()
    amqp_broker.queues.update({f"{queue}.dlq", f"{queue}.retry.60000"})
    assert amqp_broker.depth(f"{queue}.retry.60000") == 1
    assert bodies(amqp_broker, queue) == [b'{"n": 1}']  # the refused original, given back


def test_after_a_refused_publish_the_producer_uses_a_new_channel(amqp_broker, queue):
    """As for copies: Publisher and Host.publish go on, after a nack, on a new channel."""
    amqp_broker.conn.channel().queue_declare(
        queue=f"{queue}.full",
        durable=True,
        auto_delete=False,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    amqp_broker.queues.update({f"{queue}.full"})
    producer = KombuProducer(amqp_broker.url)
    message = {"content_type": "application/json", "content_encoding": "utf-8", "headers": {}}
    try:
        producer.publish(queue, b'{"n": 1}', message_id="m1", **message)
        refused_on = producer._routed.channel
        with pytest.raises(CopyRefused, match="nacked"):
            producer.publish(f"{queue}.full", b'{"n": 2}', message_id="m2", **message)
        assert producer._routed.channel is not refused_on
        assert not refused_on.is_open
        producer.publish(queue, b'{"n": 3}', message_id="m3", **message)
    finally:
        producer.close()
    assert bodies(amqp_broker, queue) == [b'{"n": 1}', b'{"n": 3}']


def test_an_existing_quorum_queue_is_consumed_with_delivery_counts(amqp_broker, queue):
    channel = amqp_broker.conn.channel()
    channel.queue_declare(
        queue=queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
    )
    message = channel.prepare_message(b"{}", content_type="application/json")
    channel.basic_publish(message, exchange="", routing_key=queue)  # no plain declare
    transport = transport_for(amqp_broker, queue)  # no queue_arguments: used as it is
    first = fetch_until(transport, 1)[0]
    assert first.delivery_count is None
    transport.requeue([first])
    second = fetch_until(transport, 1)[0]
    assert second.delivery_count == 2
    transport.ack(second)
    transport.close()


def test_queue_arguments_declare_a_quorum_queue(amqp_broker, queue):
    transport = transport_for(amqp_broker, queue, queue_arguments={"x-queue-type": "quorum"})
    transport.close()
    channel = amqp_broker.conn.channel()
    with pytest.raises(Exception, match=r"PRECONDITION_FAILED|inequivalent"):
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)


def test_with_heartbeats_off_a_finished_ack_still_goes_within_50_ms(amqp_broker):
    """heartbeat=0 is valid; acks must not then wait for the owner's next fetch."""
    from consumer_host.transports.base import QueueSpec
    from consumer_host.transports.kombu_transport import KombuTransport

    from .brokers import AMQP_URL, rabbit_unacked, unique_queue
    from .helpers import wait_until

    queue = unique_queue()
    amqp_broker.publish(queue, {"n": 1})
    amqp_broker.publish(queue, {"n": 2})
    transport = KombuTransport(
        AMQP_URL, QueueSpec(queue=queue, dead_letter=f"{queue}.dlq"), heartbeat=0
    )
    transport.connect()
    transport.start_consuming()
    try:
        got: list = []
        wait_until(lambda: got.extend(transport.fetch(0.2, 10)) or got, timeout=10)
        transport.ack(got.pop())  # the first settle ends slow start (its ack goes at once)
        wait_until(lambda: got.extend(transport.fetch(0.2, 10)) or got, timeout=10)
        transport.ack(got.pop())  # coalesced: due in 50 ms
        # The owner now sits in a long handler: no fetch. Only the keeper can send it.
        wait_until(lambda: rabbit_unacked(queue) == 0 and amqp_broker.depth(queue) == 0, 5)
    finally:
        transport.close()


def test_a_lost_connection_is_reported_not_silently_opened_again(amqp_broker, queue):
    """py-amqp marks a connection lost after a failed write; kombu's ``Connection.connection``
    would then open a new one without our queue, QoS or subscription."""
    transport = transport_for(amqp_broker, queue)
    try:
        lost = transport._conn.connection  # the py-amqp connection of this consume
        lost.transport.connected = False  # what a failed heartbeat write leaves behind
        with pytest.raises(BrokerUnavailable):
            transport.fetch(0.1)
        with pytest.raises(BrokerUnavailable):
            transport.watch()
        assert transport._conn._connection is lost, "no second connection was opened"
    finally:
        transport.close()
