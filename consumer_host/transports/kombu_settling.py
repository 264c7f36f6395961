"""Settling deliveries on kombu: acks (coalesced on RabbitMQ), retries, dead letters, requeues.

A mixin of :class:`~consumer_host.transports.kombu_transport.KombuTransport`, which owns the
connection, its channels and the I/O lock; every method here runs under that lock (through
``_translated``) or is called by code that holds it.

Retries and dead letters are copies (:mod:`.kombu_copies`), published on a second channel,
confirmed and mandatory-routed (:mod:`.kombu_producer`), before the original is acked; on
kombu's virtual transports a retry carries ``x-retry-at`` and the consumer holds it until then.
With ack coalescing the ledger (:mod:`.amqp_acks`) says which acks are safe to send, and the
keeper (:mod:`.amqp_keeper`) sends those due while the owner thread sits in a handler.
"""

from __future__ import annotations

from typing import Any

from kombu.connection import Connection

from consumer_host.clock import Clock
from consumer_host.errors import CopyRefused
from consumer_host.message import RETRY_AT_HEADER, Delivery

from .amqp_acks import AckLedger
from .amqp_keeper import Keeper
from .base import QueueSpec
from .kombu_connection import Guard
from .kombu_copies import Copies
from .kombu_producer import RoutedChannel, renewed
from .suspects import SlowStart


class KombuSettling:
    """Ack, retry, dead-letter and requeue on the transport's consuming channel."""

    spec: QueueSpec
    is_amqp: bool
    _clock: Clock
    _conn: Connection | None
    _channel: Any
    _routed: RoutedChannel | None
    _slow_start: bool
    _window: SlowStart
    _consumer_tag: str | None
    _copies: Copies
    _keeper: Keeper | None
    _coalesce: bool
    _ack_batch: int
    _ledger: AckLedger

    def _translated(self, action: str) -> Guard:
        raise NotImplementedError

    def _subscribe(self) -> str:
        raise NotImplementedError

    def ack(self, delivery: Delivery) -> None:
        with self._translated("ack on"):
            self._ack(delivery)
            if self._slow_start:
                self._settled_slowly(delivery)

    def _settled_slowly(self, delivery: Delivery) -> None:
        """In slow start: the ack goes out now (with qos 1 the broker sends nothing else until
        it has it), and only a message delivered for the first time opens the window. While
        redeliveries come (a crash left them unacked), they come one at a time, so a message
        that kills the process again is the only one whose delivery count grows."""
        self._flush_acks()
        if delivery.first_delivery:
            self._open_up()

    def _open_up(self) -> None:
        """After the first settlement: let up to ``prefetch`` messages in.

        RabbitMQ applies a per-consumer ``basic.qos`` only to consumers that start after it, so
        a new subscription replaces the slow-start one (subscribed before the old one is
        cancelled: no gap). kombu's virtual channels apply a new qos at once.
        """
        self._slow_start = False
        self._window.warm = True
        self._channel.basic_qos(0, self.spec.prefetch, False)
        if not self.is_amqp:
            return
        old, self._consumer_tag = self._consumer_tag, self._subscribe()
        if old is not None:
            self._channel.basic_cancel(old)

    def _ack(self, delivery: Delivery) -> None:
        if not self._coalesce:
            self._channel.basic_ack(delivery.handle)
            return
        ledger = self._ledger
        ledger.finish(delivery.handle, self._clock.now())
        if len(ledger) >= self._ack_batch:
            self._flush_acks()
        elif self._keeper is not None:
            self._keeper.ack_recorded()

    def _flush_acks(self) -> None:
        """Send what the ledger says is safe to ack now (caller holds the I/O lock)."""
        if not len(self._ledger) or self._channel is None:
            return
        up_to, singles = self._ledger.take()
        channel = self._channel
        if up_to is not None:
            channel.basic_ack(up_to, multiple=True)
        for tag in singles:
            channel.basic_ack(tag)

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        with self._translated("retry on"):
            if self.is_amqp:
                assert self._conn is not None
                target = self._copies.retry_queue(self._conn, delay)
            else:
                target = self.spec.queue
                headers = {**headers, RETRY_AT_HEADER: self._clock.wall() + delay}
            self._copy(delivery, target, headers)
            self._ack(delivery)
            if self._slow_start:
                self._settled_slowly(delivery)

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        with self._translated("dead-letter on"):
            self._copy(delivery, self.spec.dead_letter, headers)
            self._ack(delivery)
            if self._slow_start:
                self._settled_slowly(delivery)

    def requeue(self, deliveries: list[Delivery]) -> None:
        """Give unstarted deliveries back. Not a settlement for slow start: nothing was done."""
        with self._translated("requeue on"):
            for delivery in deliveries:
                self._give_back(delivery)

    def _give_back(self, delivery: Delivery) -> None:
        self._channel.basic_reject(delivery.handle, requeue=True)
        if self._coalesce:
            self._ledger.settled(delivery.handle)

    def _copy(self, delivery: Delivery, target: str, headers: dict[str, Any]) -> None:
        """Publish a copy, confirmed and routed; otherwise give the original back and raise
        :class:`CopyRefused` (the connection stays usable)."""
        assert self._conn is not None
        assert self._routed is not None
        try:
            self._copies.publish(self._conn, self._routed, delivery, target, headers)
        except CopyRefused:
            self._give_back(delivery)
            if self.is_amqp:
                self._routed = renewed(self._conn, self._routed)  # see kombu_producer.renewed
            raise
