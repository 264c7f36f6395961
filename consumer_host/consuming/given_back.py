"""What this process gave back to a queue without handling it, by message id, so that a broker
that counts give-backs as deliveries (a quorum queue's ``x-delivery-count`` on RabbitMQ 3.x)
does not make them look like crashes to ``max_deliveries``.

Two things give a message back unhandled: a pause or a stop returning what was fetched but not
started, and a copy (retry, dead letter) the broker refused, whose original goes back to the
queue. The second repeats: a quorum retry queue whose leader's node died refuses copies until a
new leader is elected (1-10 s measured on a loaded 3-node cluster), and each instance that takes
the message in the meantime fails it, is refused and gives it back again.

One memory serves every instance of a queue in the process (see
:class:`~consumer_host.hosting.consumers.ConsumerBuilder`): the broker hands a given-back message
to whichever consumer has room, often another instance. Another process's give-backs are not
known here (README, Clusters, "What replication cannot promise").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from consumer_host.message import Delivery

#: How many given-back message ids are remembered (oldest forgotten first).
GIVEN_BACK_MEMORY = 10_000


class GivenBack:
    """Give-backs per message id, shared by the consumer threads of one queue."""

    def __init__(self, limit: int = GIVEN_BACK_MEMORY) -> None:
        self._limit = limit
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, deliveries: Iterable[Delivery]) -> None:
        """These deliveries went back to the queue unhandled (messages without an id cannot be
        recognised when they return, and are not remembered)."""
        with self._lock:
            counts = self._counts
            for delivery in deliveries:
                message_id = delivery.message_id
                if message_id is not None:
                    counts[message_id] = counts.get(message_id, 0) + 1
                    counts.move_to_end(message_id)
            while len(counts) > self._limit:
                counts.popitem(last=False)

    def times(self, delivery: Delivery) -> int:
        """How often this process gave ``delivery``'s message back (0 when never, or unknown)."""
        message_id = delivery.message_id
        if message_id is None:
            return 0
        with self._lock:
            return self._counts.get(message_id, 0)

    def __bool__(self) -> bool:
        return bool(self._counts)
