"""Helpers for testing code that runs on consumer-host: a fake clock you move by hand."""

from __future__ import annotations

import threading

_EPOCH = 1_700_000_000.0


class FakeClock:
    """A clock that only moves when told to.

    ``advance(seconds)`` moves time and wakes the waits it finishes. With ``auto_advance=True``
    every wait jumps time forward by its own timeout at once, so a crash loop with real backoff
    delays runs in microseconds and leaves its exact sequence of delays in :attr:`waits`.
    """

    def __init__(self, start: float = 0.0, *, auto_advance: bool = False) -> None:
        self._now = start
        self._cond = threading.Condition()
        self.auto_advance = auto_advance
        self.waits: list[float] = []
        """Every timeout passed to :meth:`wait`, in order."""

    def now(self) -> float:
        with self._cond:
            return self._now

    def wall(self) -> float:
        return _EPOCH + self.now()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def wait(self, stop: threading.Event, timeout: float) -> bool:
        with self._cond:
            self.waits.append(timeout)
            if self.auto_advance:
                self._now += max(0.0, timeout)
                self._cond.notify_all()
                return stop.is_set()
            deadline = self._now + timeout
            while not stop.is_set() and self._now < deadline:
                # Event.set() does not notify this condition, so look again every few ms.
                self._cond.wait(0.005)
            return stop.is_set()
