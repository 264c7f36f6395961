"""A correct app: mypy --strict finds nothing wrong here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from consumer_host import Host, KillSwitch, Message, Publisher


def audit(message: Message) -> None:
    return None


host = Host("shop", middleware=[])


@host.consumer("orders", queue="orders", concurrency=4, prefetch=10, pool=2, critical=True)
def handle(message: Message) -> None:
    host.publish("audit", message.body, headers={"k": "v"})


@host.consumer("async", queue="async", kill_switch=KillSwitch(activation=5), max_retries=0)
async def handle_async(message: Message) -> int:
    return 1


@host.worker("ticker", pool=1, backoff_min=0.5)
def tick(stop: threading.Event) -> None:
    stop.wait(1.0)


@host.celery_task("tasks.add", queue="math", bind=False, max_retries=2)
def add(x: int, y: int) -> int:
    return x + y


kept: Callable[[Message], None] = handle  # the decorators give back the function as it was
kept_async: Callable[[Message], Coroutine[Any, Any, int]] = handle_async
total: int = add(1, 2)
with Publisher("amqp://guest:guest@localhost//") as publisher:
    message_id: str = publisher.publish("orders", {"n": 1}, message_id="1")
