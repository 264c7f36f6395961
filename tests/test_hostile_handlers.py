"""Whatever a handler raises or does is the message's failure, never the loop's (issue 13)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from consumer_host import Host
from consumer_host.supervision.supervisor import InstanceState
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .helpers import wait_until

FAST = {"retry_backoff_min": 0.01, "retry_backoff_max": 0.02}


class CustomBase(BaseException):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


RAISERS = {
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(3),
    "GeneratorExit": GeneratorExit,
    "CustomBase": CustomBase,
    "Unprintable": Unprintable,
}


def make_host(broker):
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


@pytest.mark.parametrize("raised", sorted(RAISERS))
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_any_exception_is_retried_then_dead_lettered_and_the_loop_goes_on(
    real_broker, raised, asynchronous
):
    queue = unique_queue()
    real_broker.publish(queue, {"n": 0})
    real_broker.publish(queue, {"n": 1})
    host = make_host(real_broker)
    attempts: list[int] = []
    handled: list[int] = []
    make = RAISERS[raised]

    def work(message):
        if message.body["n"] == 0:
            attempts.append(message.attempt)
            raise make()
        handled.append(message.body["n"])

    if asynchronous:

        @host.consumer("orders", queue=queue, max_retries=2, **FAST)
        async def handle(message):
            await asyncio.sleep(0)
            work(message)

    else:

        @host.consumer("orders", queue=queue, max_retries=2, **FAST)
        def handle_sync(message):
            work(message)

    host.start()
    try:
        wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 1 and handled == [1], timeout=30)
    finally:
        assert host.stop(10) == ()
    assert attempts == [1, 2, 3]
    ((_, headers, _),) = real_broker.drain(f"{queue}.dlq")
    assert headers["x-error-type"] == raised
    if raised == "Unprintable":
        assert headers["x-error"] == "<unprintable exception>"
    (record,) = host.status()
    assert record["restarts"] == 0
    assert record["state"] == InstanceState.STOPPED
    assert host.exit_code == 0


def test_a_handler_mutating_headers_does_not_leak_into_the_dead_letter(real_broker):
    queue = unique_queue()
    real_broker.publish(queue, {"n": 0}, headers={"tenant": "acme", "trace": {"span": "a"}})
    host = make_host(real_broker)
    seen = threading.Event()

    @host.consumer("orders", queue=queue, max_retries=0)
    def handle(message):
        message.headers["tenant"] = "evil"
        message.headers["trace"]["span"] = "b"
        message.headers["x-attempt"] = 99
        seen.set()
        raise ValueError("no")

    host.start()
    try:
        wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 1, timeout=30)
    finally:
        host.stop(10)
    ((_, headers, _),) = real_broker.drain(f"{queue}.dlq")
    assert headers["tenant"] == "acme"
    assert headers["trace"] == {"span": "a"}
    assert headers["x-attempts"] == 1
