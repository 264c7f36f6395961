"""A consumer with concurrency=K whose handlers finish out of order; each handled message is
appended to LEDGER as ``n finished_at`` in one write, just before the handler returns."""

import os
import time

from consumer_host import Host, Message

LEDGER = os.environ["CONCURRENT_LEDGER"]

host = Host("concurrent-test")


@host.consumer(
    "work",
    queue=os.environ["CONCURRENT_QUEUE"],
    concurrency=int(os.environ.get("CONCURRENT_K", "8")),
    claim_after=1.0,
)
def work(message: Message) -> None:
    n = message.body["n"]
    time.sleep(0.002 * (n % 7))  # out of order: later messages often finish first
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{n} {time.time()}\n".encode())
    finally:
        os.close(fd)
