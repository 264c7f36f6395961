"""The host `python -m bench.clusters` runs: one consumer that counts to BENCH_N, notes when the
first and the last message were handled, and stops its own process (SIGTERM) at the last."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from consumer_host import Host, Message

n = int(os.environ["BENCH_N"])
out = os.environ["BENCH_OUT"]
host = Host("bench-clusters", broker=os.environ["BENCH_BROKER"])
lock = threading.Lock()
seen = {"count": 0, "first": 0.0}


@host.consumer("bench", queue=os.environ["BENCH_QUEUE"], pool=int(os.environ["BENCH_POOL"]))
def handle(message: Message) -> None:
    with lock:
        seen["count"] += 1
        if seen["count"] == 1:
            seen["first"] = time.perf_counter()
        if seen["count"] == n:
            elapsed = time.perf_counter() - seen["first"]
            with open(out, "w", encoding="utf-8") as file:
                json.dump({"elapsed": elapsed, "n": n}, file)
            os.kill(os.getpid(), signal.SIGTERM)
