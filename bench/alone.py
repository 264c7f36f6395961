"""The I/O workload with no broker at all: the ceiling the machine allows the handlers themselves.

``python -m bench.alone`` runs K asyncio tasks (``BENCH_STYLE=async``) or K threads (``sync``),
each doing :mod:`bench.workload`'s message work in a loop until N are done. Every contestant pays
this and the broker's share on top, so its rate is the upper bound of the same run.
"""

from __future__ import annotations

import asyncio
import os
import threading

from bench.workload import Run, async_client, handle_async, handle_sync, sync_client


def main() -> None:
    run = Run.from_env()
    if os.environ.get("BENCH_STYLE") == "async":
        asyncio.run(_tasks(run))
    else:
        _threads(run)


async def _tasks(run: Run) -> None:
    client = async_client(run)
    left = [run.total]

    async def task() -> None:
        while left[0] > 0:
            left[0] -= 1
            await handle_async(run, client)

    await asyncio.gather(*(task() for _ in range(run.concurrency)))
    await client.aclose()


def _threads(run: Run) -> None:
    client = sync_client(run)
    left = [run.total]
    lock = threading.Lock()

    def thread() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            handle_sync(run, client)

    threads = [threading.Thread(target=thread) for _ in range(run.concurrency)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()


if __name__ == "__main__":
    main()
