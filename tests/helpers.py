"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from consumer_host.supervision.events import Event

#: The real console script, as installed next to this interpreter.
COMMAND = str(Path(sys.executable).parent / "consumer-host")


def cli(*args, cwd=None, env=None, timeout=60, input=None):
    """Run ``consumer-host ARGS`` to completion; the CompletedProcess, text mode."""
    return subprocess.run(
        [COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        input=input,
        check=False,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` real seconds.

    Used only to synchronise with threads and brokers, never to wait out a backoff.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.005)


class EventLog:
    """A listener that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]
