"""Stuck handlers are reported once, with the stack they are in, and shown in /status."""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from consumer_host import Host
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .helpers import wait_until


def make_host(broker):
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


@pytest.mark.parametrize("kind", ["inline", "threads", "async"])
def test_a_stuck_handler_is_reported_once_with_the_function_it_is_in(real_broker, kind):
    queue = unique_queue()
    real_broker.publish(queue, {"n": 1}, message_id="stuck-1")
    host = make_host(real_broker)
    release = threading.Event()
    started = threading.Event()

    def wait_for_the_database():
        started.set()
        release.wait(10)

    async def await_the_database():
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    options = {"queue": queue, "stuck_after": 0.2, "concurrency": 1 if kind == "inline" else 3}
    if kind == "async":

        @host.consumer("orders", **options)
        async def handle(message):
            await await_the_database()

    else:

        @host.consumer("orders", **options)
        def handle_sync(message):
            wait_for_the_database()

    with capture_logs() as logs:
        host.start()
        try:
            assert started.wait(10)
            wait_until(lambda: any(e["event"] == "handler_stuck" for e in logs), timeout=10)
            (record,) = host.status()
            assert [s["message_id"] for s in record["stuck"]] == ["stuck-1"]
            threading.Event().wait(1.2)  # another watchdog round: still one report
        finally:
            release.set()
            assert host.stop(10) == ()
    reports = [e for e in logs if e["event"] == "handler_stuck"]
    assert len(reports) == 1
    (report,) = reports
    assert report["message_id"] == "stuck-1"
    assert report["instance"] == "orders"
    assert report["running_for"] >= 0.2
    expected = "await_the_database" if kind == "async" else "wait_for_the_database"
    assert expected in report["stack"]
    assert host.status()[0]["stuck"] == []
