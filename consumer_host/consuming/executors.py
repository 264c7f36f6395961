"""Where handlers run: inline, on K threads, or as K tasks on an event loop.

An executor takes jobs from the connection thread, runs their handlers, and hands the finished
jobs back; it never touches the broker connection. Jobs submitted but not started can be taken
back (a drain, a pause, a lost connection gives them to the broker again).

* :class:`InlineExecutor` runs the handler on the connection thread itself: ``concurrency=1``
  with a plain handler, today's fastest path (no hand-off at all).
* :class:`ThreadExecutor` runs plain handlers on K threads of the instance.
* :class:`AsyncExecutor` runs ``async def`` handlers as up to K tasks on an event loop that the
  instance owns, in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from structlog.contextvars import bind_contextvars

from consumer_host.clock import SYSTEM_CLOCK

from .handling import Handler, Job, run_async, run_sync

_STOP = object()


class Executor(Protocol):
    """What the consumer loop needs from whatever runs its handlers."""

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` to run, in order."""

    def finished(self) -> list[Job]:
        """The jobs that finished since the last call (non-blocking)."""
        ...

    def wait(self, timeout: float) -> None:
        """Return when a job has finished, or after ``timeout`` seconds."""

    def take_back(self) -> list[Job]:
        """Remove and return the jobs that were submitted but have not started."""
        ...

    def running(self) -> list[Job]:
        """The jobs whose handler is running now."""
        ...

    def close(self, timeout: float) -> None:
        """End the executor's threads; handlers still running are left to finish alone."""


class InlineExecutor:
    """Runs each handler at once, on the caller's (the connection's) thread."""

    def __init__(self, handler: Handler, now: Callable[[], float], context: dict[str, Any]):
        self._handler = handler
        self._now = now
        self._context = context
        self._done: list[Job] = []
        self._current: Job | None = None

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.run_now(job)
            self._done.append(job)

    def run_now(self, job: Job) -> None:
        """Run ``job``'s handler here and now (the consumer settles it itself)."""
        if self._context:  # bound once, on the connection thread the handlers run on
            bind_contextvars(**self._context)
            self._context = {}
        self._current = job
        run_sync(self._handler, job, self._now)
        self._current = None

    def finished(self) -> list[Job]:
        done, self._done = self._done, []
        return done

    def wait(self, timeout: float) -> None:
        return

    def take_back(self) -> list[Job]:
        return []

    def running(self) -> list[Job]:
        current = self._current
        return [] if current is None else [current]

    def close(self, timeout: float) -> None:
        return


class _Finished:
    """Finished jobs handed from handler threads to the connection thread."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._ready = threading.Event()

    def put(self, job: Job) -> None:
        self._jobs.append(job)
        # Event.set takes a lock and notifies: only the first of a burst needs to. A clear in
        # take() or wait() comes before they look at the deque, so the job is seen either way.
        if not self._ready.is_set():
            self._ready.set()

    def take(self) -> list[Job]:
        if not self._jobs:
            return []
        self._ready.clear()
        jobs = []
        while self._jobs:
            jobs.append(self._jobs.popleft())
        return jobs

    def wait(self, timeout: float) -> None:
        if self._jobs:
            return
        # take() may have emptied the deque after a put() set the event: clear, look again,
        # then wait, or this would return at once for ever (a busy loop).
        self._ready.clear()
        if not self._jobs:
            self._ready.wait(timeout)


class ThreadExecutor:
    """K threads taking jobs from one queue, in submission order."""

    def __init__(
        self,
        handler: Handler,
        concurrency: int,
        now: Callable[[], float],
        context: dict[str, Any],
        *,
        name: str,
    ) -> None:
        self._handler = handler
        self._now = now
        self._context = context
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = _Finished()
        self._running: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}:{index}", daemon=True)
            for index in range(1, concurrency + 1)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        # Signals belong to the main thread (see Supervisor._run).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        bind_contextvars(**self._context)  # once per thread; run_sync adds the message id
        ident = threading.get_ident()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            with self._lock:
                if job.started is not None:  # taken back meanwhile: see take_back
                    continue
                job.started = self._now()
                self._running[ident] = job
            run_sync(self._handler, job, self._now)
            with self._lock:
                del self._running[ident]
            self._done.put(job)

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._queue.put(job)

    def finished(self) -> list[Job]:
        return self._done.take()

    def wait(self, timeout: float) -> None:
        self._done.wait(timeout)

    def take_back(self) -> list[Job]:
        taken = []
        with self._lock:
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not _STOP and job.started is None:
                    taken.append(job)
        return taken

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def close(self, timeout: float) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        # One deadline for all K, not K timeouts; real time, as joins are real waits.
        deadline = SYSTEM_CLOCK.now() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - SYSTEM_CLOCK.now()))


class AsyncExecutor:
    """An event loop in its own thread running up to K handler tasks at once."""

    def __init__(
        self,
        handler: Handler,
        concurrency: int,
        now: Callable[[], float],
        context: dict[str, Any],
        *,
        name: str,
    ) -> None:
        self._handler = handler
        self._now = now
        self._context = context
        self._concurrency = concurrency
        self._done = _Finished()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._task_context = contextvars.copy_context()  # replaced on the loop's own thread
        self._thread = threading.Thread(target=self._serve, name=f"{name}:loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
        asyncio.set_event_loop(self._loop)
        bind_contextvars(**self._context)
        # Each task gets a copy of this context (a task shared with others would see their
        # message ids): instance and queue bound once, the message id by run_async.
        self._task_context = contextvars.copy_context()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def submit(self, jobs: list[Job]) -> None:
        with self._lock:
            self._waiting.extend(jobs)
        self._loop.call_soon_threadsafe(self._start_waiting)

    def _start_waiting(self) -> None:
        """On the loop: start waiting jobs while fewer than K run."""
        while True:
            with self._lock:
                if not self._waiting or len(self._running) >= self._concurrency:
                    return
                job = self._waiting.popleft()
                job.started = self._now()
                self._running.add(job)
            job.task = self._loop.create_task(self._run(job), context=self._task_context.copy())

    async def _run(self, job: Job) -> None:
        await run_async(self._handler, job, self._now)
        with self._lock:
            self._running.discard(job)
        job.task = None
        self._done.put(job)
        self._start_waiting()

    def finished(self) -> list[Job]:
        return self._done.take()

    def wait(self, timeout: float) -> None:
        self._done.wait(timeout)

    def take_back(self) -> list[Job]:
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        return taken

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def close(self, timeout: float) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)


def executor_for(
    handler: Handler,
    *,
    concurrency: int,
    asynchronous: bool,
    now: Callable[[], float],
    context: dict[str, Any],
    name: str,
) -> Executor:
    """The executor a consumer's handler and ``concurrency`` call for."""
    if asynchronous:
        return AsyncExecutor(handler, concurrency, now, context, name=name)
    if concurrency == 1:
        return InlineExecutor(handler, now, context)
    return ThreadExecutor(handler, concurrency, now, context, name=name)
