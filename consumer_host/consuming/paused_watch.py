"""A paused consumer still watches its connection.

Paused (or quiet, or behind an open kill switch), the loop fetches nothing, and the transport
reads nothing: RabbitMQ's heartbeats would go unread, and a dead connection would be noticed
only at resume while /status said ``connected: true``. So the idle loop asks the transport to
``watch()`` every :data:`WATCH_EVERY` seconds: AMQP reads what arrived (heartbeats) and checks
them, so a dead link is seen within two heartbeat intervals; Redis answers a PING. A failure
raises :class:`~consumer_host.errors.BrokerUnavailable`, and the consumer reconnects as it does
for any lost connection, still paused (it subscribes only when not paused).
"""

from __future__ import annotations

from consumer_host.clock import Clock
from consumer_host.transports.base import Transport

#: Seconds between two checks of an idle connection.
WATCH_EVERY = 0.5


class PausedWatch:
    """Calls ``transport.watch()`` at most every :data:`WATCH_EVERY` s."""

    def __init__(self, transport: Transport, clock: Clock, every: float = WATCH_EVERY) -> None:
        self._watch = transport.watch
        self._clock = clock
        self._every = every
        self._next = clock.now() + every

    def check(self) -> None:
        now = self._clock.now()
        if now < self._next:
            return
        self._next = now + self._every
        self._watch()
