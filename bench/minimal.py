"""The minimal hand-written kombu loops of the I/O workload: the ceiling rows of ``--workload io``.

``python -m bench.minimal`` consumes :mod:`bench.workload`'s run from RabbitMQ with the least
code that still acks after the handler and keeps K messages in flight:

* ``BENCH_STYLE=async``: one kombu connection drained on its own thread hands each message to
  one asyncio loop (``call_soon_threadsafe``), where K tasks at most run the async handler;
* ``BENCH_STYLE=sync``: the same connection thread hands each message to K threads
  (``ThreadPoolExecutor``) running the plain handler.

kombu channels are not thread-safe, so finished messages come back to the connection thread,
which acks them one by one between reads. Prefetch is 2 x K, as consumer-host's default. It runs
until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kombu import Connection, Consumer, Exchange, Queue

from bench.concurrency import AMQP_URL
from bench.workload import Run, async_client, handle_async, handle_sync, sync_client


def main() -> None:
    run = Run.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    finished: deque[Any] = deque()  # messages handled, waiting for the connection thread's ack
    if os.environ.get("BENCH_STYLE") == "async":
        submit, close = _on_loop(run, finished)
    else:
        submit, close = _on_threads(run, finished)
    try:
        _consume(run, submit, finished, stop)
    finally:
        close()


def _consume(
    run: Run, submit: Callable[[Any], None], finished: deque[Any], stop: threading.Event
) -> None:
    with Connection(AMQP_URL) as conn:
        consumer = Consumer(
            conn.channel(),
            [Queue(run.queue, Exchange(""), routing_key=run.queue, durable=True)],
            callbacks=[lambda _body, message: submit(message)],
            accept=["json"],
            prefetch_count=2 * run.concurrency,
        )
        with consumer:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.005)
                while finished:
                    finished.popleft().ack()


def _on_loop(run: Run, finished: deque[Any]) -> tuple[Callable[[Any], None], Callable[[], None]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    client = asyncio.run_coroutine_threadsafe(_make_client(run), loop).result()
    slots = asyncio.run_coroutine_threadsafe(_semaphore(run.concurrency), loop).result()

    running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    async def handle(message: Any) -> None:
        async with slots:
            await handle_async(run, client)
        finished.append(message)

    def start(message: Any) -> None:
        task = loop.create_task(handle(message))
        running.add(task)
        task.add_done_callback(running.discard)

    def submit(message: Any) -> None:
        loop.call_soon_threadsafe(start, message)

    return submit, lambda: loop.call_soon_threadsafe(loop.stop)


async def _make_client(run: Run) -> Any:
    return async_client(run)


async def _semaphore(size: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(size)


def _on_threads(run: Run, finished: deque[Any]) -> tuple[Callable[[Any], None], Callable[[], None]]:
    client = sync_client(run)
    pool = ThreadPoolExecutor(run.concurrency)

    def handle(message: Any) -> None:
        handle_sync(run, client)
        finished.append(message)

    def submit(message: Any) -> None:
        pool.submit(handle, message)

    return submit, lambda: pool.shutdown(wait=True)


if __name__ == "__main__":
    main()
