"""How fast a consumer retries while a broker cluster fails over, and for how long such errors
stay out of the broker circuit's count.

A Sentinel promotion took 4.3-4.4 s after the kill here, a Redis Cluster failover 5.2-6.0 s.
Counted as ordinary failures, that run of errors would open the circuit (5 failures) and the
0.5/1/2/4 s backoff plus the 15 s cool-down would turn it into ~20 s without consuming. So a
``BrokerFailingOver`` is retried every ``interval`` (catching the promotion within that much)
and not counted, for up to ``grace`` seconds from the first; a failover that lasts longer than
that is no failover, and its errors count as any other from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumer_host.clock import Clock
from consumer_host.errors import BrokerError, BrokerFailingOver


@dataclass(frozen=True)
class FailoverPacing:
    interval: float = 0.25
    grace: float = 30.0
    #: A connection that lasted this long ended the failover; a shorter one (connect, then the
    #: same error) is the same failover going on, so a fault that only looks like one (a
    #: command that always fails with a failover's error) still runs out of grace.
    settled: float = 5.0


class FailoverPace:
    """Tracks one run of failover errors of one consumer."""

    def __init__(self, clock: Clock, pacing: FailoverPacing | None = None) -> None:
        self._clock = clock
        self.pacing = pacing or FailoverPacing()
        self._since: float | None = None
        self._connected_at: float | None = None

    def delay(self, error: BrokerError) -> float | None:
        """The pause before the next try when ``error`` is part of a failover still within its
        grace (not to be counted as a failure); ``None`` when it counts as any other failure."""
        if not isinstance(error, BrokerFailingOver):
            return None
        now = self._clock.now()
        connected_at, self._connected_at = self._connected_at, None
        if connected_at is not None and now - connected_at >= self.pacing.settled:
            self._since = None  # the last failover ended in a connection that held
        if self._since is None:
            self._since = now
        if now - self._since > self.pacing.grace:
            return None
        return self.pacing.interval

    def connected(self) -> None:
        self._connected_at = self._clock.now()
