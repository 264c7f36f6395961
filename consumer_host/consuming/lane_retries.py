"""Retries that wait in their partition lane (``partition_order="strict"``).

A failed message of a partitioned consumer does not go to the broker's retry path, where it would
come back behind its key's later messages: it keeps its key's lane, unacked, and runs again when
its delay is over. The wait is a timer read by the consumer's own loop; no thread or handler slot
is held, and other keys keep running."""

from __future__ import annotations

import heapq

from consumer_host.clock import Clock

from .handling import Job

#: The longest wait held in a lane. A longer retry or ``Defer`` goes through the broker's retry
#: path (its key's order is not kept for it): RabbitMQ closes the channel of a consumer that holds
#: a message unacked past its ``consumer_timeout`` (30 min by default), and every message the
#: instance holds would come back.
LONGEST_WAIT_IN_LANE = 900.0


class LaneRetries:
    """Failed jobs waiting, in their lane, for their retry delay; ordered by when they are due."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def wait(self, job: Job, delay: float) -> None:
        """Hold ``job`` until ``delay`` seconds from now."""
        self._seq += 1
        heapq.heappush(self._heap, (self._clock.now() + delay, self._seq, job))

    def due(self) -> list[Job]:
        """Remove and return the jobs whose delay is over, earliest first."""
        now = self._clock.now()
        ready = []
        while self._heap and self._heap[0][0] <= now:
            ready.append(heapq.heappop(self._heap)[2])
        return ready

    def wait_at_most(self, poll: float) -> float:
        """How long the loop may block before the next job is due."""
        if not self._heap:
            return poll
        return max(0.0, min(poll, self._heap[0][0] - self._clock.now()))

    def take_all(self) -> list[Job]:
        """Remove every waiting job (a drain, a pause or a lost connection), earliest first."""
        jobs = [job for _, _, job in sorted(self._heap)]
        self._heap.clear()
        return jobs
