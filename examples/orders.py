"""The example host: orders flowing through a pool, one failing, retried and dead-lettered.

    EXAMPLE_PRODUCER=1 consumer-host run examples/orders.py   # with demo orders, embedded broker
    consumer-host run examples/orders.py --broker amqp://guest:guest@localhost:5672//
    consumer-host publish orders '{"id": 42, "amount": 9.5}'

Every order whose id is a multiple of 7 is "out of stock": it fails, is retried twice and lands
in ``orders.dlq``. With ``EXAMPLE_PRODUCER=1`` a producer worker publishes a demo order every
second so there is something to watch. It is off by default: deployed as it is (Procfile,
app.json, the Docker image) the example must not feed fake orders into a real queue. Its ids
start at 1000001, so the orders you publish yourself (README: 42, 43) never look like its own.
"""

from __future__ import annotations

import itertools
import os
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


#: The demo producer's first order id: far above the ids README publishes by hand.
FIRST_DEMO_ID = 1_000_001


def produce_orders(stop: threading.Event) -> None:
    """Publish one order a second to the host's own broker (a stand-in for your shop)."""
    with Publisher(host.broker_choice.url) as publisher:
        for number in itertools.count(FIRST_DEMO_ID):
            if stop.wait(1.0):
                return
            amount = round((number - FIRST_DEMO_ID + 1) * 1.5, 2)
            publisher.publish("orders", {"id": number, "amount": amount})


if os.environ.get("EXAMPLE_PRODUCER") == "1":
    host.worker("producer")(produce_orders)


@host.worker("heartbeat")
def heartbeat(stop: threading.Event) -> None:
    while not stop.wait(10.0):
        log.info("heartbeat", workers=len(host.status()))
