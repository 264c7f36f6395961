"""The example host: orders flowing through a pool, one failing, retried and dead-lettered.

    consumer-host run examples/orders.py                  # the embedded development broker
    consumer-host run examples/orders.py --broker amqp://guest:guest@localhost:5672//
    consumer-host publish orders '{"id": 42, "amount": 9.5}'

A small producer worker publishes an order every second so there is something to watch; every
seventh order is "out of stock" and fails, is retried twice and lands in ``orders.dlq``.
"""

from __future__ import annotations

import itertools
import threading

import structlog

from consumer_host import Host, Message, Publisher

host = Host("shop")
log = structlog.get_logger("shop")


class OutOfStock(Exception):
    pass


@host.consumer("orders", queue="orders", pool=2, max_retries=2, retry_backoff_min=0.5)
def handle_order(message: Message) -> None:
    order = message.body
    if isinstance(order, dict) and order.get("id", 0) % 7 == 0:
        raise OutOfStock(f"order {order['id']}: item out of stock")
    log.info("order_processed", order=order, attempt=message.attempt)


@host.worker("producer")
def produce_orders(stop: threading.Event) -> None:
    """Publish one order a second to the host's own broker (a stand-in for your shop)."""
    with Publisher(host.broker_choice.url) as publisher:
        for number in itertools.count(1):
            if stop.wait(1.0):
                return
            publisher.publish("orders", {"id": number, "amount": round(number * 1.5, 2)})


@host.worker("heartbeat")
def heartbeat(stop: threading.Event) -> None:
    while not stop.wait(10.0):
        log.info("heartbeat", workers=len(host.status()))
