"""Retries held in process, for kombu's virtual brokers (memory://, filesystem://), which have
no TTLs: a retried copy comes straight back with an ``x-retry-at`` header, and the consumer holds
it until then."""

from __future__ import annotations

import heapq

from consumer_host.clock import Clock
from consumer_host.message import RETRY_AT_HEADER, Delivery


class HeldRetries:
    """Deliveries that came back before their ``x-retry-at`` time, ordered by when they are due."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = 0

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def hold_if_early(self, delivery: Delivery) -> bool:
        """Keep ``delivery`` if its retry time has not come; ``True`` when it was kept."""
        due = delivery.headers.get(RETRY_AT_HEADER)
        if not isinstance(due, int | float) or isinstance(due, bool):
            return False
        wait = due - self._clock.wall()
        if wait <= 0:
            return False
        self._seq += 1
        heapq.heappush(self._heap, (self._clock.now() + wait, self._seq, delivery))
        return True

    def due(self) -> list[Delivery]:
        """Remove and return the deliveries whose time has come, without their retry header."""
        now = self._clock.now()
        ready = []
        while self._heap and self._heap[0][0] <= now:
            _, _, delivery = heapq.heappop(self._heap)
            delivery.headers.pop(RETRY_AT_HEADER, None)
            ready.append(delivery)
        return ready

    def wait_at_most(self, poll: float) -> float:
        """How long a fetch may block before the next held delivery is due."""
        if not self._heap:
            return poll
        return max(0.0, min(poll, self._heap[0][0] - self._clock.now()))

    def take_all(self) -> list[Delivery]:
        held = [delivery for _, _, delivery in self._heap]
        self._heap.clear()
        return held
