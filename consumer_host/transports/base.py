"""The interface every broker transport implements for a consumer.

A transport instance belongs to one consumer instance and is used from that instance's thread
only (kombu channels and our Redis scripts assume one owner). Every broker failure leaves a
transport as :class:`~consumer_host.errors.BrokerUnavailable` (transient: retry with backoff) or
:class:`~consumer_host.errors.BrokerRefused` (permanent: surface it); nothing else escapes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from consumer_host.message import Delivery
from consumer_host.redaction import redact_url

#: Every connection we open carries this prefix in its name on the broker.
CONNECTION_NAME_PREFIX = "consumer-host"


def connection_name(instance: str) -> str:
    """``consumer-host:web-7f9c:4711:orders-0``: the name a broker shows for our connection
    (AMQP ``connection_name``, Redis ``CLIENT SETNAME``), so an operator sees which host,
    process and consumer holds it, and a test can close its own connections and no one
    else's. Redis names may not hold spaces, so none are made."""
    parts = (CONNECTION_NAME_PREFIX, socket.gethostname(), str(os.getpid()), instance)
    return ":".join(part.replace(" ", "_") for part in parts)


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    """Where a consumer reads from and where its failures go."""

    queue: str
    dead_letter: str
    exchange: str | None = None
    routing_key: str | None = None
    prefetch: int = 10
    queue_arguments: dict[str, Any] = field(default_factory=dict)
    """Broker-specific arguments for the main queue (AMQP ``x-queue-type: quorum``, ...). When
    empty, an existing queue is used as it is, whatever its arguments."""


class Transport(Protocol):
    """Connect, fetch, settle, close: what the consumer needs from a broker.

    The consumer calls every method from its one connection thread; handler threads and tasks
    never touch a transport. Settlements (``ack``, ``retry``, ``dead_letter``, ``requeue``) may
    come in any order relative to the order of delivery: with ``concurrency=K`` the K handlers
    finish when they finish.

    **Slow start.** After every ``start_consuming`` a transport hands out one delivery at a
    time (AMQP: ``basic.qos(1)``; Redis lists: one move; Streams: one read or claim) until the
    first delivery is settled, then up to ``prefetch``. A message that kills the process is then
    the only one whose delivery count grows with each crash: its batch-mates are not blamed.

    **Optional capabilities.** The members after :meth:`depth` have plain defaults here (a
    single node, no wake, nothing to watch): a transport subclasses ``Transport`` explicitly,
    inherits them, and overrides what its broker offers. mypy then checks each override
    against the signature below, and flags a transport that lacks a required method.
    """

    #: ``True`` when the broker holds retried messages back itself (TTL queues, sorted sets);
    #: otherwise the consumer holds them until their ``x-retry-at`` time.
    delays_retries: bool

    spec: QueueSpec
    """The queues as the broker names them: a Redis Cluster's ``{orders}.dlq`` where the
    consumer was configured with ``orders.dlq`` (log lines name the real key)."""

    def connect(self) -> None:
        """Open the connection and declare the queue, its dead-letter queue and retry plumbing."""

    def start_consuming(self) -> None:
        """Subscribe to the queue; deliveries arrive through :meth:`fetch`."""

    def fetch(self, timeout: float, limit: int) -> list[Delivery]:
        """Wait up to ``timeout`` seconds for at most ``limit`` deliveries (``limit >= 1``);
        keep the connection alive and send due acks meanwhile. Deliveries the broker pushed
        beyond ``limit`` stay inside the transport for the next call."""
        ...

    def ack(self, delivery: Delivery) -> None:
        """The message is done.

        When the ack reaches the broker differs, and a caller may assume only that it does
        before :meth:`close` returns or within ``max_ack_delay`` (50 ms), whichever is first,
        even while the owning thread is busy: Redis lists collect entries for one script of
        ``LREM``s; AMQP coalesces a contiguous run of finished delivery tags into one
        ``basic.ack(multiple)`` (never over an unfinished tag); Streams collect ids for one
        ``XACK``. A crash before it can only cause a redelivery.
        """

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        """Schedule a copy with ``headers`` after ``delay`` seconds, then ack the original.

        The copy counts only once the broker confirmed it *and routed it*; only then is the
        original acked: a crash between the two can duplicate the message, never lose it. If the
        broker refuses or cannot route the copy, the original is given back to the queue and
        :class:`~consumer_host.errors.CopyRefused` is raised.
        """

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        """Move a copy with ``headers`` to the dead-letter queue, as :meth:`retry` does."""

    def requeue(self, deliveries: list[Delivery]) -> None:
        """Give unstarted deliveries back to the queue, at its head where the broker allows."""

    def stop_consuming(self) -> None:
        """Cancel the subscription so nothing new arrives; the connection stays open."""

    def close(self) -> None:
        """Send pending acks, close the connection; unsettled deliveries return to the queue.
        Never raises, and never waits long for a broker that does not answer."""

    def discard(self) -> None:
        """Drop a connection that failed, without talking to the broker. Never raises."""

    def depth(self) -> dict[str, int]:
        """Messages waiting in the queue and in its dead-letter queue (for ``check``)."""
        ...

    # -- optional capabilities: the defaults below suit a single-node broker ------------------
    # (Each default body is a bare ``return``: mypy takes a body of only a docstring for an
    # abstract method, which every transport would then have to write out.)

    node: str | None = None
    """The cluster node connected to now (password masked), for ``/status`` and the connect
    and disconnect events; ``None`` on a single node or while not connected."""

    can_wake: bool = False
    """``True`` when :meth:`wake` can end an idle :meth:`fetch` early: the consumer's idle
    reads may then last longer than ``poll_interval`` (consuming.waking)."""

    def wake(self) -> None:
        """End an idle :meth:`fetch` now (a stop or a pause is waiting); called from any
        thread. Nothing to do for a transport that cannot be woken."""
        return

    def watch(self) -> None:
        """The consumer is paused and fetches nothing: check that the connection still lives
        (AMQP reads and checks heartbeats, Redis answers a PING), raising
        :class:`~consumer_host.errors.BrokerUnavailable` if not (consuming.paused_watch).
        Nothing to watch by default."""
        return

    def fail_over(self) -> bool:
        """The connection was lost: ``True`` when the next connect should go to a cluster's
        next node at once, without a backoff or a failure counted against the broker circuit.
        ``False`` (back off) by default, as for a single node."""
        return False


class Producer(Protocol):
    """Publishes whole messages to a queue, as producers do: persistent, and only reported
    done once the broker has taken them (AMQP: confirmed and routed)."""

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        message_id: str,
    ) -> None: ...

    def close(self) -> None: ...


class Place:
    """Where a broker operation failed (``read from amqp://user:***@host// queue 'orders'``),
    turned into text only when an error message is built."""

    __slots__ = ("action", "queue", "url")

    def __init__(self, action: str, url: str, queue: str) -> None:
        self.action = action
        self.url = url
        self.queue = queue

    def __format__(self, spec: str) -> str:
        return f"{self.action} {redact_url(self.url)} queue {self.queue!r}"


#: How long an idle consumer blocks in one read when a wake can end the read sooner.
IDLE_WAIT = 5.0
