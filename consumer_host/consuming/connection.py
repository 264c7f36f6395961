"""A consumer's link to its broker: connect through the broker circuit that every consumer of
the same broker shares, back off after a loss, and say so in events.

Broker errors are handled here, not in the supervisor: a lost connection is retried with
backoff while the circuit is closed; once the circuit is open it paces the retries (one probe
per cool-down) and a closing circuit lets everyone in at once. Only a permanent refusal
(``BrokerRefused``: bad credentials, ...) escapes.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from consumer_host.clock import Clock
from consumer_host.consuming.failover_pace import FailoverPace
from consumer_host.errors import BrokerError, BrokerRefused, BrokerUnavailable
from consumer_host.supervision.backoff import Backoff, BackoffPolicy
from consumer_host.supervision.breaker import BreakerState, CircuitBreaker
from consumer_host.supervision.events import ConsumerConnected, ConsumerDisconnected, EventHook
from consumer_host.transports.base import Transport


class BrokerLink:
    """Connects one transport and tracks whether it is connected."""

    def __init__(
        self,
        transport: Transport,
        breaker: CircuitBreaker,
        *,
        backoff: BackoffPolicy,
        clock: Clock,
        emit: EventHook,
        instance: str,
        worker: str,
        queue: str,
        broker: str,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.transport = transport
        self._breaker = breaker
        self._clock = clock
        self._emit = emit
        self._names = {"instance": instance, "worker": worker, "queue": queue, "broker": broker}
        self._backoff = Backoff(backoff, rand=rand)
        self.failover = FailoverPace(clock)
        self.connected = False
        self.reconnects = 0
        self._connected_once = False

    def open(self, stop: threading.Event, *, subscribe: bool) -> bool:
        """Connect (and subscribe when asked), waiting on the broker circuit; ``False`` if
        stopped first. A permanent refusal raises ``BrokerRefused``."""
        while not stop.is_set():
            if not self._breaker.allow():
                retry_at = self._breaker.retry_at()
                pause = 1.0 if retry_at is None else retry_at - self._clock.now()
                # Look again at least every second: another consumer's probe may close it sooner.
                self._clock.wait(stop, min(max(pause, 0.01), 1.0))
                continue
            try:
                self.transport.connect()
                if subscribe:
                    self.transport.start_consuming()
            except BrokerRefused:
                self._breaker.record_failure()
                raise
            except BrokerUnavailable as exc:
                if self.lost(stop, exc):
                    return False
                continue
            self._breaker.record_success()
            self._backoff.reset()
            self.failover.connected()
            self.connected = True
            node = self._node()
            self._emit(ConsumerConnected(**self._names, node=node, reconnect=self._connected_once))
            if self._connected_once:
                self.reconnects += 1
            self._connected_once = True
            return True
        return False

    def lost(self, stop: threading.Event, error: BrokerError) -> bool:
        """Count a lost or failed connection, drop it and back off; ``True`` if stopped.
        A cluster's failover is neither counted nor backed off while it lasts as one should."""
        node = self._node()
        # On a RabbitMQ cluster the transport goes to its next node at once; only a round in
        # which no node answered counts against the circuit (transports.amqp_nodes). A Redis
        # failover is retried at its own pace, uncounted while it lasts (failover_pace).
        # Only while the circuit is closed: a half-open circuit's probe must report back, or
        # every consumer of the broker waits for it to go stale.
        closed = self._breaker.state is BreakerState.CLOSED
        delay = self.failover.delay(error) if closed else None
        if delay is None and closed and self.transport.fail_over():
            delay = 0.0
        if delay is None:
            self._breaker.record_failure()
            # Our own backoff while the circuit is closed; once open, the circuit paces retries.
            delay = self._backoff.next() if self._breaker.state is BreakerState.CLOSED else 0.0
        self.connected = False
        self.transport.discard()
        self._emit(ConsumerDisconnected(**self._names, node=node, error=str(error), delay=delay))
        return self._clock.wait(stop, delay)

    def _node(self) -> str:
        """The cluster node the transport is on (password masked); empty for a single node."""
        return self.transport.node or ""
