"""The per-message work every concurrency contestant does, and the Redis tally that times it.

Each contestant runs in its own process (or processes), so the handler itself keeps the score in
Redis: one INCR per message on a per-run key. The INCR is part of the I/O workload (a handler
that talks to a service) and the correctness guard (the parent compares the total with the N it
published). The first and the N-th INCR also stamp the wall clock, so the rate is measured the
same way for one process or several: from the first handled message to the N-th.

Everything is configured through ``BENCH_*`` environment variables, because the contestants are
started by their own command lines (``consumer-host run``, ``dramatiq``, ``celery worker``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

#: The I/O workload's handler: this long asleep (time.sleep or asyncio.sleep) plus one INCR.
IO_SECONDS = 0.010
#: The CPU workload's handler: this long in a pure Python loop plus one INCR.
CPU_SECONDS = 0.001


@dataclass(frozen=True)
class Run:
    """One measured run, as the parent hands it to a contestant through the environment."""

    queue: str
    key: str
    total: int
    work: str  # "io" or "cpu"
    redis_url: str
    concurrency: int

    @classmethod
    def from_env(cls) -> Run:
        return cls(
            queue=os.environ["BENCH_QUEUE"],
            key=os.environ["BENCH_KEY"],
            total=int(os.environ["BENCH_TOTAL"]),
            work=os.environ.get("BENCH_WORK", "io"),
            redis_url=os.environ["BENCH_REDIS_URL"],
            concurrency=int(os.environ.get("BENCH_CONCURRENCY", "1")),
        )

    def env(self) -> dict[str, str]:
        return {
            "BENCH_QUEUE": self.queue,
            "BENCH_KEY": self.key,
            "BENCH_TOTAL": str(self.total),
            "BENCH_WORK": self.work,
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_CONCURRENCY": str(self.concurrency),
        }


def busy(seconds: float = CPU_SECONDS) -> int:
    """Spin in pure Python (holding the GIL) for ``seconds``; the CPU workload's handler body."""
    end = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


def marks(total: int) -> dict[int, str]:
    """The counts whose INCR stamps the wall clock: first, 10 %, 90 % and last.

    The rate is taken between the 10 % and 90 % marks: the steady state, without the start-up
    skew of several processes (a child that boots later) or the last few stragglers.
    """
    return {1: "first", max(1, total // 10): "p10", total - total // 10: "p90", total: "last"}


def stamp_fields(run: Run, count: int) -> dict[str, str]:
    """The wall-clock stamps the ``count``-th INCR sets (see :func:`marks`)."""
    now = repr(time.time())
    return {f"{run.key}:{name}": now for mark, name in marks(run.total).items() if mark == count}


def handle_sync(run: Run, client: Any) -> None:
    """One message on a thread: 10 ms asleep (or 1 ms busy), then INCR the tally."""
    if run.work == "cpu":
        busy()
    else:
        time.sleep(IO_SECONDS)
    stamps = stamp_fields(run, client.incr(run.key))
    if stamps:
        client.mset(stamps)


async def handle_async(run: Run, client: Any) -> None:
    """One message as a task: 10 ms in asyncio.sleep (or 1 ms busy), then INCR the tally."""
    import asyncio

    if run.work == "cpu":
        busy()
    else:
        await asyncio.sleep(IO_SECONDS)
    stamps = stamp_fields(run, await client.incr(run.key))
    if stamps:
        await client.mset(stamps)


def sync_client(run: Run) -> Any:
    """A thread-safe redis-py client whose pool grows to one connection per handler thread."""
    import redis

    return redis.Redis.from_url(run.redis_url)


def async_client(run: Run) -> Any:
    """A redis.asyncio client for K tasks on one loop.

    redis-py 8's asyncio pool raises "Too many connections" past ``max_connections`` instead of
    waiting for a free one, so the pool is sized for the K tasks that may INCR at once.
    """
    import redis.asyncio

    pool = redis.asyncio.ConnectionPool.from_url(
        run.redis_url, max_connections=max(run.concurrency, 1)
    )
    return redis.asyncio.Redis(connection_pool=pool)
