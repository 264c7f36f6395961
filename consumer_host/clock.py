"""Monotonic time and interruptible waits, in one replaceable object.

Every wait in consumer-host goes through a :class:`Clock`, so that a stop interrupts it and tests
can replace real time with :class:`consumer_host.testing.FakeClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What consumer-host needs from time: a monotonic reading and a wait a stop can cut short."""

    def now(self) -> float:
        """Monotonic seconds; only differences mean anything."""
        ...

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds or until ``stop`` is set; return ``stop.is_set()``."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps shown to people."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``Event.wait``."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        return stop.wait(max(0.0, timeout))

    def wall(self) -> float:
        return time.time()


SYSTEM_CLOCK = SystemClock()
