"""Slow start after a connect, limited to the real suspects.

After a process dies in a handler, the message it held comes back, and with it everything the
process had prefetched. If they all ran at once and the first killed the process again, every
one of them would be counted again, and innocent messages would reach ``max_deliveries``. So a
fresh process takes messages one at a time while they are *suspects*: redelivered messages with
a delivery count (a quorum queue's ``x-delivery-count``, a Streams entry's delivery count, a
Redis list's recovery record). It opens up to the prefetch, and stays open for the life of the
process (a pause, a resume and a reconnect keep it open: the process itself did not crash), as
soon as:

- a message comes that is not a suspect: delivered for the first time, or from a queue that
  keeps no count (a classic queue: slow start there would cost throughput and protect nothing);
- a suspect settles after being delivered for the first time (the window opened before this
  change, kept);
- :data:`SUSPECT_GRACE` seconds after the first suspect came (suspects taken one after another
  count as one wait, not one each: after a SIGKILL everything prefetched is a suspect): a slow
  message does not hold the other K-1 slots, and a message that kills the process within its
  first second is still the only one counted again.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from consumer_host.clock import Clock
from consumer_host.message import Delivery

#: Seconds a suspect runs alone before the window opens anyway.
SUSPECT_GRACE = 1.0


def is_suspect(delivery: Delivery) -> bool:
    """Delivered before, by a broker that counts deliveries: it may have killed a process."""
    return delivery.delivery_count is not None and not delivery.first_delivery


class SlowStart:
    """One transport's window: one message before it opens, the prefetch after."""

    def __init__(self, prefetch: int, clock: Clock, grace: float = SUSPECT_GRACE) -> None:
        self.prefetch = max(1, prefetch)
        self.warm = False
        """Open for the rest of this process."""
        self.unsettled: Counter[Any] = Counter()
        self._clock = clock
        self._grace = grace
        self._suspect_since: float | None = None

    def restart(self) -> None:
        """A new subscription (resume): an open window stays open."""

    def forget(self) -> None:
        """The connection is gone, and with it what was handed out (an open window stays)."""
        self.unsettled.clear()
        self._suspect_since = None

    def overdue(self) -> bool:
        """A suspect has run alone long enough: open (``True`` once, when it opens now)."""
        since = self._suspect_since
        if self.warm or since is None or self._clock.now() - since < self._grace:
            return False
        self.warm = True
        return True

    def saw(self, delivery: Delivery) -> bool:
        """A delivery came: a non-suspect opens the window (``True`` when it opens now)."""
        if self.warm:
            return False
        if not is_suspect(delivery):
            self.warm = True
            return True
        if self._suspect_since is None:
            self._suspect_since = self._clock.now()
        return False

    def allowance(self, limit: int) -> int:
        """How many to take now (0: wait for a settle). Like AMQP's ``basic.qos``, never more
        unsettled than the prefetch (one while only suspects came)."""
        self.overdue()
        window = self.prefetch if self.warm else 1
        return max(0, min(limit, window - self.unsettled.total()))

    def handed_out(self, handle: Any, delivery: Delivery | None = None) -> None:
        # get/pop rather than Counter's ``+=`` and ``del``: those run in Python, per message.
        unsettled = self.unsettled
        unsettled[handle] = unsettled.get(handle, 0) + 1
        if delivery is not None:
            self.saw(delivery)

    def settled(self, delivery: Delivery, *, counts: bool = True) -> bool:
        """``counts=False`` for deliveries given back unstarted; ``True`` when this opens the
        window now (a message delivered for the first time settled)."""
        handle = delivery.handle
        unsettled = self.unsettled
        left = unsettled.get(handle, 0) - 1
        if left > 0:
            unsettled[handle] = left
        else:
            unsettled.pop(handle, None)
        if counts and delivery.first_delivery and not self.warm:
            self.warm = True
            return True
        return False
