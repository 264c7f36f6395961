"""The consumer-host contestant: ``consumer-host run bench/host_app.py [--processes N]``.

``BENCH_STYLE`` picks the handler (``async`` or ``sync``), ``BENCH_POOL`` and
``BENCH_CONCURRENCY`` the knobs; the work and the tally are :mod:`bench.workload`'s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# consumer-host loads this file by path: make the bench package importable from the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workload import Run, async_client, handle_async, handle_sync, sync_client
from consumer_host import Host, Message

if "BENCH_SWITCH_INTERVAL" in os.environ:  # a diagnostic: how much GIL hand-offs cost
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

run = Run.from_env()
host = Host("bench")
options: dict[str, Any] = {
    "queue": run.queue,
    "pool": int(os.environ.get("BENCH_POOL", "1")),
    "concurrency": run.concurrency,
}
if "BENCH_PREFETCH" in os.environ:  # default: consumer-host's own, max(10, 2 x concurrency)
    options["prefetch"] = int(os.environ["BENCH_PREFETCH"])

if os.environ.get("BENCH_STYLE") == "async":
    import asyncio

    clients: dict[int, Any] = {}  # one per instance's event loop (pool > 1 has several)

    @host.consumer("bench", **options)
    async def handle(message: Message) -> None:
        loop = id(asyncio.get_running_loop())
        if loop not in clients:  # made on the loop that uses it, on its first message
            clients[loop] = async_client(run)
        await handle_async(run, clients[loop])

else:
    client = sync_client(run)

    @host.consumer("bench", **options)
    def handle_plain(message: Message) -> None:
        handle_sync(run, client)
