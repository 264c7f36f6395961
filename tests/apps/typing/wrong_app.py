"""A wrong app: each line marked BAD is one mypy --strict error."""

from __future__ import annotations

from consumer_host import Host, Message

host = Host("shop")


@host.consumer("orders", queue="orders", prefech=10)  # BAD: misspelt option
def handle(message: Message) -> None:
    return None


@host.consumer("payments", queue="payments", pool="2")  # BAD: a string for an int
def pay(message: Message) -> None:
    return None


@host.consumer("refunds", concurrency=2)  # BAD: queue is required
def refund(message: Message) -> None:
    return None


@host.worker("ticker", max_restarts=1.5)  # BAD: a float for an int
def tick(stop: object) -> None:
    return None


@host.consumer("totals", queue="totals")
def total(message: Message) -> int:
    return 1


result: str = total(Message.__new__(Message))  # BAD: the handler kept its type (returns int)
