"""concurrency=K, async handlers and partition lanes, on the real brokers (and kombu's memory)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from consumer_host import Host
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .helpers import wait_until


def make_host(broker):
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


FAST = {"retry_backoff_min": 0.01, "retry_backoff_max": 0.04}


class InFlight:
    """Counts handlers running at once, and the highest count seen."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.seen: list[int] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def enter(self, n: int) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.get_ident())

    def leave(self, n: int) -> None:
        with self._lock:
            self.now -= 1
            self.seen.append(n)


class TestThreads:
    def test_k_handlers_run_at_once_over_one_connection(self, broker):
        queue = unique_queue()
        broker.publish_many(queue, [{"n": n} for n in range(60)])
        host = make_host(broker)
        flight = InFlight()

        @host.consumer("orders", queue=queue, concurrency=6)
        def handle(message):
            flight.enter(message.body["n"])
            time.sleep(0.03)
            flight.leave(message.body["n"])

        host.start()
        try:
            wait_until(lambda: len(flight.seen) >= 60, timeout=30, what="60 messages")
        finally:
            assert host.stop(10) == ()
        assert sorted(flight.seen) == list(range(60))
        assert flight.most == 6
        assert len(flight.threads) == 6
        assert broker.depth(queue) == 0
        (record,) = host.status()
        assert record["acked"] == 60
        assert record["concurrency"] == 6

    def test_failures_out_of_order_are_retried_and_dead_lettered(self, broker):
        queue = unique_queue()
        broker.publish_many(queue, [{"n": n} for n in range(30)])
        host = make_host(broker)
        handled: list[int] = []
        lock = threading.Lock()

        # Half of all outcomes fail here: the kill switch would rightly stop intake for 30 s.
        @host.consumer(
            "orders", queue=queue, concurrency=4, max_retries=1, kill_switch=None, **FAST
        )
        def handle(message):
            n = message.body["n"]
            time.sleep(0.001 * (n % 5))  # finish out of order
            if n % 3 == 0:
                raise ValueError(f"bad {n}")
            with lock:
                handled.append(n)

        host.start()
        try:
            wait_until(
                lambda: broker.depth(f"{queue}.dlq") >= 10 and len(handled) >= 20,
                timeout=30,
                what="20 handled and 10 dead letters",
            )
        finally:
            assert host.stop(10) == ()
        assert sorted(handled) == [n for n in range(30) if n % 3]
        dead = broker.drain(f"{queue}.dlq")
        assert sorted(h["x-attempts"] for _, h, _ in dead) == [2] * 10
        assert broker.depth(queue) == 0


class TestAsyncHandlers:
    def test_async_handlers_run_to_completion_before_the_ack(self, broker):
        queue = unique_queue()
        broker.publish_many(queue, [{"n": n} for n in range(40)])
        host = make_host(broker)
        flight = InFlight()

        @host.consumer("orders", queue=queue, concurrency=8)
        async def handle(message):
            flight.enter(message.body["n"])
            await asyncio.sleep(0.02)
            flight.leave(message.body["n"])

        host.start()
        try:
            wait_until(lambda: len(flight.seen) >= 40, timeout=30, what="40 messages")
        finally:
            assert host.stop(10) == ()
        assert sorted(flight.seen) == list(range(40))
        assert flight.most == 8
        assert len(flight.threads) == 1  # one event loop, K tasks
        assert host.status()[0]["acked"] == 40
        assert broker.depth(queue) == 0

    def test_async_failure_is_retried_then_dead_lettered(self, real_broker):
        queue = unique_queue()
        real_broker.publish(queue, {"n": 1})
        host = make_host(real_broker)
        attempts: list[int] = []

        @host.consumer("orders", queue=queue, max_retries=2, **FAST)
        async def handle(message):
            attempts.append(message.attempt)
            await asyncio.sleep(0)
            raise RuntimeError("downstream said no")

        host.start()
        try:
            wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 1, timeout=30)
        finally:
            host.stop(10)
        assert attempts == [1, 2, 3]
        ((_, headers, _),) = real_broker.drain(f"{queue}.dlq")
        assert headers["x-error-type"] == "RuntimeError"
        assert headers["x-error"] == "downstream said no"

    def test_a_plain_handler_returning_a_coroutine_fails_instead_of_being_acked(self, broker):
        queue = unique_queue()
        broker.publish(queue, {"n": 1})
        host = make_host(broker)

        async def real_work(message):
            raise AssertionError("never awaited, never run")

        @host.consumer("orders", queue=queue, max_retries=0)
        def handle(message):
            return real_work(message)

        host.start()
        try:
            wait_until(lambda: broker.depth(f"{queue}.dlq") == 1, timeout=30)
        finally:
            host.stop(10)
        ((_, headers, _),) = broker.drain(f"{queue}.dlq")
        assert headers["x-error-type"] == "HandlerReturnedAwaitable"
        assert "async def" in headers["x-error"]


class TestPartitions:
    @pytest.mark.parametrize("asynchronous", [False, True], ids=["threads", "async"])
    def test_same_key_never_overlaps_and_keeps_queue_order(self, real_broker, asynchronous):
        queue = unique_queue()
        bodies = [{"key": f"k{n % 3}", "seq": n} for n in range(45)]
        real_broker.publish_many(queue, bodies)
        host = make_host(real_broker)
        running: dict[str, int] = {}
        order: dict[str, list[int]] = {}
        overlaps: list[str] = []
        most = [0]
        lock = threading.Lock()

        def enter(body):
            with lock:
                running[body["key"]] = running.get(body["key"], 0) + 1
                if running[body["key"]] > 1:
                    overlaps.append(body["key"])
                most[0] = max(most[0], sum(running.values()))

        def leave(body):
            with lock:
                running[body["key"]] -= 1
                order.setdefault(body["key"], []).append(body["seq"])

        options = {"queue": queue, "concurrency": 6, "partition_by": lambda m: m.body["key"]}
        if asynchronous:

            @host.consumer("orders", **options)
            async def handle(message):
                enter(message.body)
                await asyncio.sleep(0.005)
                leave(message.body)

        else:

            @host.consumer("orders", **options)
            def handle_sync(message):
                enter(message.body)
                time.sleep(0.005)
                leave(message.body)

        host.start()
        try:
            wait_until(lambda: sum(map(len, order.values())) >= 45, timeout=30)
        finally:
            assert host.stop(10) == ()
        assert overlaps == []
        assert most[0] > 1  # different keys did run at the same time
        for key, seqs in order.items():
            assert seqs == sorted(seqs), key


class TestDrain:
    def test_sigterm_drain_finishes_all_k_in_flight(self, real_broker):
        queue = unique_queue()
        real_broker.publish_many(queue, [{"n": n} for n in range(50)])
        host = make_host(real_broker)
        started = threading.Event()
        done: list[int] = []
        lock = threading.Lock()

        @host.consumer("orders", queue=queue, concurrency=5)
        def handle(message):
            started.set()
            time.sleep(0.2)
            with lock:
                done.append(message.body["n"])

        host.start()
        assert started.wait(10)
        wait_until(lambda: host.status()[0]["in_flight"] == 5, timeout=5)
        assert host.stop(10) == ()
        # What was started finished and was acked; the rest went back to the queue.
        assert len(done) >= 5
        assert host.status()[0]["acked"] == len(done)
        wait_until(lambda: real_broker.depth(queue) == 50 - len(done), timeout=10)
