"""Regressions found by review: partition lanes after a pause, headers too deep to copy, a
restart after a loop failure, quorum-queue give-backs counted as deliveries."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Producer

from consumer_host import Host
from consumer_host.testing import FakeClock
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .fakes import FakeTransport, delivery, scripted_consumer
from .helpers import wait_until


def make_host(broker):
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


def test_partition_lanes_survive_pause_and_resume(real_broker):
    queue = unique_queue()
    real_broker.publish_many(queue, [{"key": f"k{n % 6}", "n": n} for n in range(60)])
    host = make_host(real_broker)
    seen: list[int] = []
    lock = threading.Lock()

    @host.consumer("orders", queue=queue, concurrency=2, partition_by=lambda m: m.body["key"])
    def handle(message):
        time.sleep(0.01)
        with lock:
            seen.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: len(seen) >= 3, timeout=10)
        host.pause("orders")
        host.resume("orders")
        real_broker.publish(queue, {"key": "k5", "n": 60})
        wait_until(lambda: len(set(seen)) >= 61, timeout=30, what="every message after resume")
    finally:
        assert host.stop(10) == ()
    assert set(seen) == set(range(61))


def test_headers_too_deep_to_copy_are_dead_lettered_and_the_loop_lives(redis_broker):
    queue = unique_queue()
    deep: dict = {}
    inner = deep
    for _ in range(700):
        inner["x"] = {}
        inner = inner["x"]
    redis_broker.publish_raw(
        queue, b'{"n": 1}', "application/json", headers={"trace": deep}, message_id="deep"
    )
    redis_broker.publish(queue, {"n": 2})
    host = make_host(redis_broker)
    handled: list[int] = []

    @host.consumer("orders", queue=queue)
    def handle(message):
        handled.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: handled == [2] and redis_broker.depth(f"{queue}.dlq") == 1, timeout=15)
    finally:
        assert host.stop(10) == ()
    (record,) = host.status()
    assert record["restarts"] == 0
    assert record["state"] == "stopped"


def test_a_restart_after_a_loop_failure_starts_clean_and_stops():
    """Run 1 fails (a bug below the loop) while 3 handlers run; run 2 must not count them."""
    clock = FakeClock()
    release = threading.Event()
    transport = FakeTransport(batches=[[delivery(), delivery(), delivery()], RuntimeError("bug")])
    consumer = scripted_consumer(
        transport, clock, handler=lambda m: release.wait(5), name="orders", concurrency=3
    )
    stop = threading.Event()
    with pytest.raises(RuntimeError, match="bug"):
        consumer.run(stop)
    release.set()
    second = threading.Thread(target=consumer.run, args=(stop,))
    second.start()
    wait_until(transport.fetched.is_set, timeout=5)
    stop.set()
    second.join(5)
    assert not second.is_alive()


def test_quorum_queue_give_backs_are_not_counted_as_deliveries(amqp_broker):
    """RabbitMQ counts a requeue as a delivery on quorum queues: a consumer paused and resumed
    with a backlog behind busy handlers must dead-letter nothing (max_deliveries 2). Slow start
    already keeps repeated give-backs rare here; the consumer also discounts its own."""
    queue = unique_queue()
    host = make_host(amqp_broker)
    seen: list[int] = []
    gate = threading.Event()
    gate.set()

    @host.consumer(
        "orders",
        queue=queue,
        concurrency=2,
        prefetch=10,
        max_deliveries=2,
        queue_arguments={"x-queue-type": "quorum"},
    )
    def handle(message):
        gate.wait(20)
        seen.append(message.body["n"])

    amqp_broker.queues.add(queue)

    def publish(n: int) -> None:  # the queue is a quorum queue: publish without declaring it
        Producer(amqp_broker.conn.default_channel).publish(
            {"n": n}, routing_key=queue, serializer="json", delivery_mode=2, message_id=f"m{n}"
        )

    host.start()
    try:
        wait_until(lambda: host.status()[0]["connected"], timeout=10)
        publish(0)
        wait_until(lambda: seen == [0], timeout=10)  # warm: the prefetch window is open
        gate.clear()
        for n in range(1, 21):
            publish(n)
        wait_until(lambda: host.status()[0]["in_flight"] == 2, timeout=10)
        for _ in range(5):  # each pause gives back what waits behind the two blocked handlers
            time.sleep(0.3)
            host.pause("orders")
            host.resume("orders")
        gate.set()
        wait_until(lambda: len(set(seen)) >= 21, timeout=30, what="all 21 handled")
    finally:
        gate.set()
        assert host.stop(10) == ()
    assert amqp_broker.depth(f"{queue}.dlq") == 0
