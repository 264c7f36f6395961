"""The app bench/restart.py runs: concurrency 32, a 0-0.4 s handler, each completion timed.

Each completion appends its wall time to BENCH_LEDGER (O_APPEND, one write per line)."""

import os
import random
import threading
import time

from consumer_host import Host, Message

host = Host("restart-bench")
LEDGER = os.environ["BENCH_LEDGER"]
QUEUE = os.environ["BENCH_QUEUE"]
QUORUM = {"queue_arguments": {"x-queue-type": "quorum"}} if os.environ.get("BENCH_QUORUM") else {}


@host.consumer("work", queue=QUEUE, concurrency=32, prefetch=32, max_deliveries=5, **QUORUM)
def work(message: Message) -> None:
    threading.Event().wait(random.uniform(0.0, 0.4))
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.time()}\n".encode())
    finally:
        os.close(fd)
