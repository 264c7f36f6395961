"""A paused consumer keeps watching its connection: a dead one is seen within two heartbeat
intervals, reconnected, and the consumer is still paused (RabbitMQ, Redis lists, Streams).

The connection dies in a TCP fault proxy between this host and the broker (only this test's
connection: never the shared broker's other clients)."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit, urlunsplit

from consumer_host import Host
from consumer_host.consuming.paused_watch import PausedWatch
from consumer_host.testing import FakeClock
from consumer_host.transports.base import Transport as TransportBase
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .chaos.faultproxy import FaultProxy
from .helpers import wait_until

HEARTBEAT = 2.0


def through(proxy_port: int, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host_port = f"127.0.0.1:{proxy_port}"
    netloc[-1] = host_port
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


def test_a_dead_connection_under_a_paused_consumer_is_seen_and_it_stays_paused(real_broker):
    upstream = urlsplit(real_broker.url)
    proxy = FaultProxy((upstream.hostname or "127.0.0.1", upstream.port or 5672)).start()
    queue = unique_queue("paused")
    host = Host("paused-watch")
    host.use_broker(BrokerChoice(through(proxy.port, real_broker.url), "test"))
    seen: list[int] = []
    lock = threading.Lock()

    @host.consumer("orders", queue=queue, heartbeat=HEARTBEAT)
    def handle(message):
        with lock:
            seen.append(message.body["n"])

    host.start()
    try:
        wait_until(lambda: host.status()[0]["connected"], 15, "connected")
        host.pause("orders")
        proxy.blackhole()  # the link is dead but no one says so: only heartbeats/pings show it
        cut_at = time.monotonic()
        wait_until(lambda: not host.status()[0]["connected"], 4 * HEARTBEAT, "the dead link seen")
        assert time.monotonic() - cut_at <= 2 * HEARTBEAT + 1.5
        proxy.forward()
        wait_until(lambda: host.status()[0]["connected"], 30, "reconnected")
        record = host.status()[0]
        assert record["paused"] is True
        real_broker.publish_many(queue, [{"n": n} for n in range(5)])
        time.sleep(1.0)  # a window in which a wrongly resumed consumer would take them
        assert seen == []
        host.resume("orders")
        wait_until(lambda: len(seen) == 5, 20, "every message after resume")
    finally:
        host.stop(10)
        proxy.stop()


def test_the_watch_runs_at_most_every_interval_and_only_when_the_transport_has_one():
    clock = FakeClock()
    calls: list[float] = []

    class Transport(TransportBase):
        def watch(self) -> None:
            calls.append(clock.now())

    watch = PausedWatch(Transport(), clock, every=0.5)
    watch.check()
    assert calls == []
    clock.advance(0.5)
    watch.check()
    watch.check()
    assert len(calls) == 1

    class Plain(TransportBase):  # Transport's own watch(): nothing to do
        pass

    PausedWatch(Plain(), clock).check()
