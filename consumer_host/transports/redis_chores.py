"""Chores done once per queue per process, not once per consumer instance.

Every instance of a pool used to keep its own timers for the chores of its queue (moving due
retries back, sweeping dead consumers, forgetting stale stream consumers): ten instances of one
queue did each chore ten times as often as it needs doing, and an idle host paid for it. Here
the instances of one queue in one process share one :class:`~.redis_common.Cadence` per chore:
whichever instance comes by when it is due does it for all. Chores are idempotent scripts or
commands, so two instances that both find one due (a race) only do it twice.
"""

from __future__ import annotations

import threading

from consumer_host.clock import Clock

from .redis_common import Cadence


class SharedCadence(Cadence):
    """A :class:`Cadence` that several consumer threads consult."""

    def __init__(self, clock: Clock, interval: float, *, jitter: float = 0.5) -> None:
        super().__init__(clock, interval, jitter=jitter)
        self.clock = clock
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            return super().due()

    def at(self, monotonic: float) -> None:
        with self._lock:
            super().at(monotonic)


_shared: dict[tuple[int, str, str, float], SharedCadence] = {}
_shared_lock = threading.Lock()


def shared_cadence(
    clock: Clock, url: str, chore: str, interval: float, *, jitter: float = 0.5
) -> SharedCadence:
    """The one cadence of ``chore`` (name it with its queue) on ``url`` in this process."""
    key = (id(clock), url, chore, interval)
    with _shared_lock:
        cadence = _shared.get(key)
        # A clock of a test that ended may have left its id to a new one: never share across.
        if cadence is None or cadence.clock is not clock:
            cadence = _shared[key] = SharedCadence(clock, interval, jitter=jitter)
        return cadence
