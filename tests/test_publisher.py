"""The producer users get: ``Publisher(url)`` without a host and ``host.publish`` from inside
one, on every broker; confirmed, JSON that kombu consumers read, refusals raised."""

from __future__ import annotations

import threading

import pytest
import redis
from kombu import Connection

from consumer_host import BrokerRefused, BrokerUnavailable, CopyRefused, Host, Publisher
from consumer_host.transports.broker import BrokerChoice

from .brokers import broker_tool, redis_url, require, unique_queue
from .helpers import wait_until


def test_a_published_message_reaches_a_consumer_host_consumer(broker):
    queue = unique_queue("pub")
    broker.queues.add(queue)
    with Publisher(broker.url) as publisher:
        message_id = publisher.publish(
            queue, {"order": 1}, headers={"tenant": "a"}, message_id="m-1"
        )
    assert message_id == "m-1"
    got = []
    host = Host("pub")
    host.use_broker(BrokerChoice(broker.url, "test"))
    host.consumer("orders", queue=queue)(got.append)
    host.start()
    try:
        wait_until(lambda: got, what="the message")
    finally:
        host.stop(10)
    [message] = got
    assert (message.body, message.message_id) == ({"order": 1}, "m-1")
    assert message.headers["tenant"] == "a"
    assert message.content_type == "application/json"


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_kombu_consumers_read_what_it_publishes(kind):
    """The envelope kombu (and so Celery) consumers read: a plain kombu SimpleQueue gets it."""
    tool = next(broker_tool(kind))
    queue = unique_queue("pub")
    tool.queues.add(queue)
    try:
        message_id = Publisher(tool.url).publish(queue, {"n": 2}, headers={"h": 1})
        with Connection(tool.url) as conn:
            simple = conn.SimpleQueue(queue)
            received = simple.get(timeout=10)
            assert received.payload == {"n": 2}
            assert received.headers["h"] == 1
            assert received.properties["message_id"] == message_id
            received.ack()
            simple.close()
    finally:
        tool.close()


def test_a_message_rabbitmq_refuses_is_an_error_not_a_success(amqp_broker):
    queue = unique_queue("full")
    amqp_broker.queues.add(queue)
    channel = amqp_broker.conn.channel()
    channel.queue_declare(
        queue=queue,
        durable=True,
        auto_delete=False,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    with Publisher(amqp_broker.url) as publisher, pytest.raises(CopyRefused, match="nacked"):
        publisher.publish(queue, {"n": 1})


def test_a_redis_write_that_cannot_happen_raises():
    require("redis")
    queue = unique_queue("pub")
    client = redis.Redis.from_url(redis_url())
    try:
        client.set(queue, "not a list")
        with pytest.raises(BrokerRefused, match="WRONGTYPE"):
            Publisher(redis_url()).publish(queue, {"n": 1})
    finally:
        client.delete(queue)


def test_an_unreachable_broker_is_broker_unavailable():
    with pytest.raises(BrokerUnavailable):
        Publisher(redis_url(port=1), connect_timeout=1).publish("q", {})


def test_host_publish_is_safe_from_many_handler_threads_at_once(real_broker):
    source, target = unique_queue("src"), unique_queue("dst")
    real_broker.queues.update({source, target})
    real_broker.publish_many(source, [{"n": n} for n in range(20)])
    host = Host("relay")
    host.use_broker(BrokerChoice(real_broker.url, "test"))
    relayed = []
    lock = threading.Lock()

    @host.consumer("relay", queue=source, concurrency=4)
    def relay(message):
        host.publish(target, message.body, headers={"from": source})

    @host.consumer("sink", queue=target)
    def sink(message):
        with lock:
            relayed.append((message.body["n"], message.headers["from"]))

    host.start()
    try:
        wait_until(lambda: len(relayed) == 20, timeout=30, what="20 relayed messages")
    finally:
        host.stop(10)
    assert sorted(relayed) == [(n, source) for n in range(20)]
