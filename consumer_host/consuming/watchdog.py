"""Stuck handlers: one WARNING per message whose handler runs past ``stuck_after``, with the
stack it is in now, so an operator sees *where* it hangs (Spring's non-responsive consumer).

One thread per host looks at every consumer once a second. It only reads: a stuck handler is
never interrupted (Python cannot stop a thread safely); liveness decides whether the pod goes.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from consumer_host.clock import Clock

from .handling import Job

_log = structlog.get_logger("consumer_host.watchdog")

#: Frames of a stuck handler's stack shown in the report (the innermost ones).
STACK_LIMIT = 12


class Watched(Protocol):
    """A consumer instance, as the watchdog sees it."""

    name: str
    stuck_after: float

    @property
    def queue(self) -> str: ...

    def running_jobs(self) -> list[Job]: ...


class Watchdog:
    """Reports handlers running longer than their consumer's ``stuck_after``."""

    def __init__(self, host: str, clock: Clock, watched: Callable[[], Sequence[Watched]]):
        self._host = host
        self._clock = clock
        self._watched = watched
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{host}-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        # Paced by real time (a fake clock in a test must not make it spin); judged by the clock.
        while not self._stop.wait(1.0):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog must outlive whatever it watches
                _log.exception("watchdog_failed", host=self._host)

    def check(self) -> None:
        now = self._clock.now()
        for watched in self._watched():
            for job in watched.running_jobs():
                started = job.started
                if started is None or job.stuck_reported or now - started < watched.stuck_after:
                    continue
                job.stuck_reported = True
                _log.warning(
                    "handler_stuck",
                    host=self._host,
                    instance=watched.name,
                    queue=watched.queue,
                    message_id=job.delivery.message_id,
                    running_for=round(now - started, 3),
                    stack=stack_of(job),
                )


def stuck_jobs(jobs: list[Job], now: float, stuck_after: float) -> list[dict[str, Any]]:
    """What /status shows of the handlers running past ``stuck_after``."""
    return [
        {"message_id": job.delivery.message_id, "running_for": round(now - job.started, 3)}
        for job in jobs
        if job.started is not None and now - job.started >= stuck_after
    ]


def stack_of(job: Job) -> str:
    """The stack a job's handler is in now: its thread's frames, or its task's coroutines."""
    task = job.task  # read once: the loop thread clears it when the task ends
    if task is not None:
        frames = _awaiting_frames(task.get_coro())[-STACK_LIMIT:]
        summary = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)
        return "".join(summary.format()) or "(the task has no frames)"
    frame = sys._current_frames().get(job.thread_id) if job.thread_id is not None else None
    if frame is None:
        return "(the handler's thread is gone)"
    return "".join(traceback.format_stack(frame, limit=STACK_LIMIT))


def _awaiting_frames(coro: Any) -> list[Any]:
    """The frames of a suspended coroutine and of everything it awaits, outermost first
    (``Task.get_stack`` gives only the outermost one for a suspended task)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames
