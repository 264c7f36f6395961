"""Pause, resume, quiet and the kill switch on the real brokers: intake stops, nothing is lost."""

from __future__ import annotations

import threading
import time

import pytest

from consumer_host import Host
from consumer_host.consuming.killswitch import KillSwitch
from consumer_host.errors import ConfigError
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .helpers import wait_until


def make_host(broker):
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


def test_pause_while_messages_arrive_then_resume_handles_each_once(real_broker):
    queue = unique_queue()
    host = make_host(real_broker)
    seen: list[int] = []
    lock = threading.Lock()

    @host.consumer("orders", queue=queue, pool=2, concurrency=2)
    def handle(message):
        time.sleep(0.002)
        with lock:
            seen.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: all(r["connected"] for r in host.status()), timeout=10)
        real_broker.publish_many(queue, [{"n": n} for n in range(50)])
        wait_until(lambda: len(seen) >= 5, timeout=10)
        assert host.pause("orders") == ["orders-1", "orders-2"]
        wait_until(lambda: all(not r["consuming"] for r in host.status()), timeout=10)
        real_broker.publish_many(queue, [{"n": n} for n in range(50, 100)])
        with lock:
            paused_at = len(seen)
        time.sleep(0.3)  # a paused consumer takes nothing, however long it stays paused
        assert len(seen) == paused_at
        assert all(r["paused"] and r["in_flight"] == 0 for r in host.status())
        assert host.readiness()[0]  # paused on purpose is still ready
        host.resume("orders")
        wait_until(lambda: len(seen) >= 100, timeout=30, what="all 100 after resume")
    finally:
        assert host.stop(10) == ()
    assert sorted(seen) == list(range(100))


def test_pausing_an_unknown_or_plain_worker_is_a_clear_error(real_broker):
    host = make_host(real_broker)

    @host.consumer("orders", queue=unique_queue())
    def handle(message):
        pass

    @host.worker("beat")
    def beat(stop):
        stop.wait()

    with pytest.raises(ConfigError, match="no consumer of that name"):
        host.pause("beat")
    with pytest.raises(ConfigError, match="orders"):
        host.pause("ordres")


def test_quiet_stops_intake_and_sigterm_leaves_the_queue_intact(real_broker):
    queue = unique_queue()
    host = make_host(real_broker)
    seen: list[int] = []

    @host.consumer("orders", queue=queue)
    def handle(message):
        seen.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: host.status()[0]["connected"], timeout=10)
        host.quiet()
        wait_until(lambda: not host.status()[0]["consuming"], timeout=10)
        assert not host.readiness()[0]
        real_broker.publish_many(queue, [{"n": n} for n in range(20)])
        time.sleep(0.3)
        with pytest.raises(ConfigError, match="quiet"):
            host.resume("orders")
    finally:
        assert host.stop(10) == ()
    assert seen == []
    wait_until(lambda: real_broker.depth(queue) == 20, timeout=10)


def test_kill_switch_trips_and_recovers_with_nothing_lost(real_broker):
    queue = unique_queue()
    host = make_host(real_broker)
    down = threading.Event()
    down.set()
    handled: list[int] = []
    lock = threading.Lock()

    @host.consumer(
        "orders",
        queue=queue,
        max_retries=0,
        kill_switch=KillSwitch(activation=10, trip_ratio=0.5, pause=0.5),
    )
    def handle(message):
        if down.is_set():
            raise ConnectionError("the database is down")
        with lock:
            handled.append(message.body["n"])

    real_broker.publish_many(queue, [{"n": n} for n in range(100)])
    host.start()
    try:
        wait_until(lambda: host.status()[0]["kill_switch"] == "open", timeout=15)
        dead_at_trip = real_broker.depth(f"{queue}.dlq")
        assert 10 <= dead_at_trip < 20  # a few dead letters, not the whole queue
        down.clear()  # the database is back: the probe succeeds, the switch closes
        # A message already taken when the switch opened still finishes (and, failing, is
        # dead-lettered after the count above): count the dead letters as they are now.
        wait_until(
            lambda: len(handled) + real_broker.depth(f"{queue}.dlq") >= 100,
            timeout=30,
            what="every message handled or dead-lettered",
        )
        assert host.status()[0]["kill_switch"] == "closed"
    finally:
        assert host.stop(10) == ()
    dead = real_broker.depth(f"{queue}.dlq")
    assert dead_at_trip <= dead < 20  # and what was in hand at the trip, not the queue
    assert len(handled) + dead == 100
    assert len(set(handled)) == len(handled)
