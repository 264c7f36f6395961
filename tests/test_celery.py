"""A real Celery client publishing to the real RabbitMQ and Redis, consumed by consumer-host."""

from __future__ import annotations

import threading
import time

import pytest
from celery import Celery

from consumer_host import Host
from consumer_host.transports.broker import BrokerChoice

from .brokers import AMQP_URL, REDIS_URL, broker_tool, redis_url, unique_queue
from .helpers import wait_until

RESULTS_URL = redis_url(db=14)


@pytest.fixture(params=["amqp", "redis"])
def celery_broker(request):
    """Where Celery producers publish: RabbitMQ and Redis lists (Celery has no Streams)."""
    yield from broker_tool(request.param)


@pytest.fixture
def celery_setup(celery_broker):
    real_broker = celery_broker
    url = AMQP_URL if real_broker.kind == "amqp" else REDIS_URL
    client = Celery("producers", broker=url, backend=RESULTS_URL)
    client.conf.update(
        task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True
    )
    queue = unique_queue("celery")
    real_broker.queues.add(queue)
    host = Host("celery-test")
    host.use_broker(BrokerChoice(url, "test"))
    yield client, host, queue
    host.stop(10)
    client.close()


def test_args_kwargs_countdown_expiry_unknown_tasks_and_results(celery_setup, celery_broker):
    real_broker = celery_broker
    client, host, queue = celery_setup
    calls = []
    lock = threading.Lock()

    @host.celery_task("orders.process", queue=queue, result_backend=RESULTS_URL)
    def process(order_id, *, amount, note=None):
        with lock:
            calls.append((order_id, amount, note, time.monotonic()))
        return {"order": order_id, "total": amount * 2}

    @host.celery_task("orders.refund", queue=queue, bind=True)
    def refund(task, order_id):
        with lock:
            calls.append(("refund", order_id, task.id, task.name))

    host.start()
    result = client.send_task("orders.process", args=[7], kwargs={"amount": 2.5}, queue=queue)
    assert result.get(timeout=20) == {"order": 7, "total": 5.0}
    sent = time.monotonic()
    later = client.send_task(
        "orders.process", args=[8], kwargs={"amount": 1, "note": "x"}, queue=queue, countdown=2
    )
    refunded = client.send_task("orders.refund", args=[9], queue=queue)
    client.send_task("orders.process", args=[10], kwargs={"amount": 1}, queue=queue, expires=-1)
    client.send_task("orders.unknown", args=[11], queue=queue)
    assert later.get(timeout=20) == {"order": 8, "total": 2}
    wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 2, what="two dead letters")
    [countdown] = [c for c in calls if c[0] == 8]
    assert countdown[3] - sent >= 1.9, "the countdown was honoured"
    assert ("refund", 9, refunded.id, "orders.refund") in calls
    assert 10 not in [c[0] for c in calls], "an expired task never runs"
    reasons = sorted(h["x-error"] for _, h, _ in real_broker.drain(f"{queue}.dlq"))
    assert "expired" in reasons[0]
    assert reasons[1].startswith("unknown task 'orders.unknown'")


def test_a_failing_task_reaches_async_result_as_an_exception_after_retries(
    celery_setup, celery_broker
):
    real_broker = celery_broker
    client, host, queue = celery_setup
    attempts = []

    @host.celery_task(
        "orders.charge",
        queue=queue,
        result_backend=RESULTS_URL,
        max_retries=2,
        retry_backoff_min=0.01,
    )
    def charge(order_id):
        attempts.append(order_id)
        raise ValueError(f"card declined for {order_id}")

    host.start()
    result = client.send_task("orders.charge", args=[5], queue=queue)
    with pytest.raises(ValueError, match="card declined for 5"):
        result.get(timeout=20)
    assert attempts == [5, 5, 5]
    wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 1)
