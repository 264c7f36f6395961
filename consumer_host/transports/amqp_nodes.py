"""The nodes of a RabbitMQ cluster, taken in turn.

A failover URL (``amqp://n1//;amqp://n2//;amqp://n3//``, kombu's form) names every node. Each
connection (a consumer's, the producer's, ``check``'s, ``dlq``'s) goes through a
:class:`NodeRotation`: a failed connect moves to the next node at once, and only when every node
failed in one round does the round fail, as one :class:`BrokerUnavailable` that names each node
and its error. The consumer's broker circuit counts that one failure, so it opens only when no
node answers: a breaker per node would count a node that is down for maintenance while the rest
of the cluster serves, and a per-URL breaker that counted every node's refusal would open after
two rounds while a quorum queue re-elects its leader in a few seconds.

A node whose connection was just lost is tried last in the next round, and not before
``settle`` seconds (about 1 s): a node that is going down may still accept a connection for a
moment and drop it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable
from consumer_host.redaction import redact_url

T = TypeVar("T")

#: How long a node whose connection was just lost waits before it is trusted again.
SETTLE = 1.0
#: A connection that lived this long was healthy: its loss starts the count of quick failovers
#: afresh.
STABLE = 5.0
#: Never set: the settle pause is short and is not cut by a stop request.
_NEVER = threading.Event()


def nodes_of(url: str) -> list[str]:
    """The node URLs of a (failover) URL, in order; one element for a plain URL."""
    nodes = [part.strip() for part in url.split(";") if part.strip()]
    return nodes or [url]


class NodeRotation:
    """Which node to try next for one connection, and which node it is on now."""

    def __init__(self, url: str, *, clock: Clock = SYSTEM_CLOCK, settle: float = SETTLE) -> None:
        self.nodes = nodes_of(url)
        self._clock = clock
        self._settle = settle
        self._start = 0
        self._lost: dict[int, float] = {}
        self._current: int | None = None
        self._connected_at = 0.0
        self._quick_failovers = 0

    @property
    def clustered(self) -> bool:
        return len(self.nodes) > 1

    @property
    def node(self) -> str | None:
        """The URL of the node connected to now, or ``None``."""
        return None if self._current is None else self.nodes[self._current]

    @property
    def masked_node(self) -> str:
        """The node connected to now, password masked; empty when not connected or on one
        node (every line names the broker already)."""
        node = self.node
        return "" if node is None or not self.clustered else redact_url(node)

    def round(self) -> list[int]:
        """The indexes of the nodes to try, in order: the preferred start first, a node lost
        within ``settle`` seconds last."""
        count = len(self.nodes)
        order = [(self._start + step) % count for step in range(count)]
        now = self._clock.now()
        settling = [i for i in order if now - self._lost.get(i, -self._settle) < self._settle]
        return [i for i in order if i not in settling] + settling

    def connect(self, attempt: Callable[[str], T]) -> T:
        """``attempt(node_url)`` on each node of a round until one succeeds; every failure is a
        :class:`BrokerUnavailable`. Other errors (a wrong password is wrong on every node)
        propagate at once."""
        self._current = None
        failures: list[str] = []
        for index in self.round():
            self._await_settled(index)
            try:
                result = attempt(self.nodes[index])
            except BrokerUnavailable as exc:
                failures.append(str(exc))
                continue
            self._current = index
            self._start = index
            self._connected_at = self._clock.now()
            return result
        if len(failures) == 1:
            raise BrokerUnavailable(failures[0])
        raise BrokerUnavailable(
            f"no node of the cluster answered ({len(failures)} tried): " + "; ".join(failures)
        )

    def lost(self) -> bool:
        """The connection to the current node was lost: remember when, start the next round at
        the next node. ``True`` when the next round should begin at once (another node may
        serve), ``False`` when the caller should back off: no node, a single node, or as many
        quick failovers in a row as there are nodes (each node accepted and then failed)."""
        index = self._current
        self._current = None
        if index is None or not self.clustered:
            return False  # one node: the caller's own backoff, no settle pause on top
        now = self._clock.now()
        self._lost[index] = now
        self._start = (index + 1) % len(self.nodes)
        if now - self._connected_at >= STABLE:
            self._quick_failovers = 0
        self._quick_failovers += 1
        return self._quick_failovers < len(self.nodes)

    def _await_settled(self, index: int) -> None:
        since = self._lost.get(index)
        if since is None:
            return
        remaining = since + self._settle - self._clock.now()
        if remaining > 0:
            self._clock.wait(_NEVER, remaining)
