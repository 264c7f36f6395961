"""The app bench/dlq_list.py lists the dead letters of."""

import os

from consumer_host import Host, Message

host = Host("dlq-bench")


@host.consumer("orders", queue=os.environ["BENCH_QUEUE"])
def handle(message: Message) -> None:
    """Never runs: the bench only lists the dead-letter queue."""
