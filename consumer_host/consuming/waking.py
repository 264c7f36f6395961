"""How long an idle consumer may wait for a message in one read.

``poll_interval`` bounds how late an idle consumer notices a stop or a pause. A transport that
can be woken (its ``can_wake`` is true; a stop or a pause calls its ``wake()``) does not need
that bound, so its idle reads last :data:`WOKEN_IDLE_WAIT` at least: hundreds of idle
consumers then wake a few times a second in all, not hundreds.
"""

from __future__ import annotations

from consumer_host.transports.base import IDLE_WAIT, Transport

#: The longest idle read of a transport that can be woken.
WOKEN_IDLE_WAIT = IDLE_WAIT


def idle_wait(transport: Transport, poll_interval: float) -> float:
    """``poll_interval``, or longer when ``transport`` can be woken."""
    if not transport.can_wake:
        return poll_interval
    return max(poll_interval, WOKEN_IDLE_WAIT)
