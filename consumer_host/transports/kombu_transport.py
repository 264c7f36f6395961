"""Consumers on kombu: RabbitMQ through py-amqp, and kombu's in-process and filesystem brokers.

Settling (acks, retries and dead letters as copies, requeues) is in :mod:`.kombu_settling`.

On RabbitMQ deliveries are read straight from py-amqp (no kombu ``Message``, whose constructor
raises on an unknown ``compression`` header), through a frame reader that survives properties
py-amqp cannot parse (:mod:`.amqp_frames`); acks may come in any order (:mod:`.amqp_acks`) and
reach the broker within ``max_ack_delay`` even while the owner thread sits in a handler: the
heartbeat keeper thread sends due acks under the same I/O lock. Frames are read in bulk
(:mod:`.amqp_reads`).
Deliveries are built in :mod:`.kombu_deliveries`.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from contextlib import suppress
from typing import Any

from kombu.connection import Connection

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable
from consumer_host.message import Delivery
from consumer_host.redaction import redact_url

from . import amqp_frames, amqp_reads
from .amqp_acks import AckLedger
from .amqp_idle import IdleWait
from .amqp_keeper import Keeper
from .amqp_nodes import NodeRotation
from .base import QueueSpec, Transport
from .broker import scheme_of
from .kombu_connection import AMQP_SCHEMES, Guard, connection_options
from .kombu_copies import Copies, check_amqp_names, declare_dead_letter_queue
from .kombu_deliveries import from_amqp, from_kombu
from .kombu_heartbeats import KombuHeartbeats
from .kombu_producer import RoutedChannel, declare_queue
from .kombu_settling import KombuSettling
from .suspects import SlowStart

__all__ = ["AMQP_SCHEMES", "KombuTransport", "connection_options"]

_CLOSE_TIMEOUT = 2.0


class KombuTransport(KombuSettling, KombuHeartbeats, Transport):
    """One kombu connection with a consuming channel and a confirming publishing channel."""

    def __init__(
        self,
        url: str,
        spec: QueueSpec,
        *,
        heartbeat: float = 20.0,
        connect_timeout: float = 5.0,
        ack_coalescing: bool = True,
        max_ack_delay: float = 0.05,
        clock: Clock = SYSTEM_CLOCK,
        instance: str = "consumer",
    ) -> None:
        self.url = url
        self.spec = spec
        self.is_amqp = scheme_of(url) in AMQP_SCHEMES
        if self.is_amqp:
            check_amqp_names(spec)
        self.delays_retries = self.is_amqp
        self._clock = clock
        self._heartbeat = heartbeat if self.is_amqp else 0.0
        self._instance = instance
        self._options = connection_options(
            url, heartbeat=heartbeat, connect_timeout=connect_timeout, instance=instance
        )
        self._conn: Connection | None = None
        self._channel: Any = None
        self._routed: RoutedChannel | None = None
        self._consumer_tag: str | None = None
        self._slow_start = False
        self._window = SlowStart(spec.prefetch, clock)  # which deliveries keep slow start on
        self._buffer: deque[Delivery] = deque()
        self._copies = Copies(url, spec, is_amqp=self.is_amqp)
        self._last_heartbeat_check = 0.0
        # Held for every use of the connection; free while a handler runs, so the keeper can
        # send heartbeats and due acks without interleaving frames with the owner thread.
        self._io = threading.Lock()
        self._keeper: Keeper | None = None
        # kombu's virtual transports ignore basic.ack's ``multiple``: ack those one by one.
        self._coalesce = ack_coalescing and self.is_amqp
        self._max_ack_delay = max_ack_delay
        self._ack_batch = max(1, spec.prefetch // 2)
        self._ledger = AckLedger()
        self._idle = IdleWait(self._heartbeat) if self.is_amqp else None  # see amqp_idle
        self.can_wake = self._idle is not None
        self._guard = Guard(self._io, url, spec.queue, lambda: self._conn)
        # A cluster's failover URL: each connect tries its nodes in turn (amqp_nodes).
        self._nodes = NodeRotation(url, clock=clock)
        self._connect_timeout = connect_timeout
        # The rotation's node, as Transport.node: a plain attribute, since the Redis transports
        # assign theirs. Set wherever the rotation moves (connect, fail_over), nowhere else.
        self.node: str | None = None

    def fail_over(self) -> bool:
        """The connection was lost: ``True`` when the next connect should go to the cluster's
        next node at once, without a backoff or a failure counted against the circuit."""
        at_once = self._nodes.lost()
        self.node = None
        return at_once

    # -- connection -----------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        self.node = None  # a round starts on no node, and a failed one ends on none
        self._nodes.connect(self._connect_node)
        self.node = self._nodes.masked_node or None
        self._start_keeper()

    def _connect_node(self, node: str) -> None:
        if node != self.url:  # a failover URL: this node's own options (its TLS server name)
            self._options = connection_options(
                node,
                heartbeat=self._heartbeat,
                connect_timeout=self._connect_timeout,
                instance=self._instance,
            )
        conn = Connection(node, **self._options)
        self._conn = conn
        self._guard.url = node
        self._copies.url = node
        try:
            self._open(conn)
        except BrokerUnavailable:
            self.discard()  # this node failed: nothing of it stays for the next one
            raise

    def _open(self, conn: Connection) -> None:
        with self._translated("connect to"):
            # No retries here: the consumer backs off through the shared broker circuit.
            conn.ensure_connection(max_retries=0)
            if self.is_amqp:
                amqp_frames.install(conn.connection)
                amqp_reads.install(conn.connection.transport)
            self._channel = conn.channel()
            if self.is_amqp:
                # py-amqp would turn bodies into text using their declared encoding; the
                # consumer decodes (and judges) the exact bytes that were sent instead.
                self._channel.auto_decode = False
            self._routed = RoutedChannel(conn.channel(), amqp_broker=self.is_amqp)
            self._declare(conn)

    def _declare(self, conn: Connection) -> None:
        spec = self.spec
        # Without arguments, an existing queue of any type is used as it is.
        declare_queue(
            conn, spec.queue, arguments=spec.queue_arguments, strict=bool(spec.queue_arguments)
        )
        if spec.exchange:
            self._channel.exchange_declare(exchange=spec.exchange, type="direct", durable=True)
            self._channel.queue_bind(
                queue=spec.queue,
                exchange=spec.exchange,
                routing_key=spec.routing_key or spec.queue,
            )
        declare_dead_letter_queue(conn, spec)
        self._copies.forget_declarations()

    def start_consuming(self) -> None:
        with self._translated("consume from"):
            # Slow start: one message at a time while only suspects come (see suspects.py),
            # once per process: a resume or a reconnect of a process that did not crash opens.
            self._slow_start = not self._window.warm
            self._channel.basic_qos(0, 1 if self._slow_start else self.spec.prefetch, False)
            self._consumer_tag = self._subscribe()

    def _subscribe(self) -> str:
        tag = f"consumer-host-{uuid.uuid4().hex}"
        callback = self._on_amqp_message if self.is_amqp else self._on_kombu_message
        self._channel.basic_consume(
            queue=self.spec.queue, no_ack=False, callback=callback, consumer_tag=tag
        )
        return tag

    def stop_consuming(self) -> None:
        if self._consumer_tag is not None and self._channel is not None:
            with self._translated("cancel the consumer of"):
                self._flush_acks()
                self._channel.basic_cancel(self._consumer_tag)
            self._consumer_tag = None

    def close(self) -> None:
        """Send pending acks and close, but never wait more than a couple of seconds."""
        conn = self._conn
        if conn is None:
            return
        self._stop_keeper()
        with self._io, suppress(Exception):  # a failing close still leaves us disconnected
            if conn.connected:  # (conn.connection would open a lost one again)
                sock = getattr(getattr(conn.connection, "transport", None), "sock", None)
                if sock is not None:
                    sock.settimeout(_CLOSE_TIMEOUT)
                self._flush_acks()
            conn.release()
        self._forget()
        if self._idle is not None:
            self._idle.close()
        with suppress(Exception):
            conn.collect()

    def wake(self) -> None:
        if self._idle is not None:
            self._idle.wake()

    def discard(self) -> None:
        """Drop a connection that failed, without a word to the broker: a black-holed
        connection would never answer a polite close."""
        conn = self._conn
        if conn is None:
            return
        self._stop_keeper()
        self._forget()
        with self._io, suppress(Exception):
            conn.collect()

    def _forget(self) -> None:
        with self._io:
            self._conn = None
            self._consumer_tag = None
            self._routed = None
            self._channel = None
            self._buffer = deque()
            self._ledger.clear()

    # -- consuming --------------------------------------------------------------------------------

    def _on_amqp_message(self, msg: Any) -> None:
        """A py-amqp message, straight off the frame reader (which marks unparseable ones)."""
        if self._coalesce:
            self._ledger.delivered(msg.delivery_info["delivery_tag"])
        self._buffer.append(from_amqp(msg))

    def _on_kombu_message(self, message: Any) -> None:
        """A kombu message from a virtual transport (memory, filesystem)."""
        self._buffer.append(from_kombu(message))

    def _live(self) -> Connection:
        """The connection, or :class:`BrokerUnavailable` once it is lost. Checked before each
        use: kombu's ``Connection.connection`` would silently open a new one after a failed
        write, without our queue, QoS or subscription, and the consumer would wait on it."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise BrokerUnavailable(f"not connected to {redact_url(self._guard.url)}")
        return conn

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        conn = self._live()
        buffer = self._buffer
        with self._translated("read from"):
            since = self._ledger.first_finished_at
            if since is not None:
                due = since + self._max_ack_delay - self._clock.now()
                if due <= 0:
                    self._flush_acks()
                else:
                    timeout = min(timeout, due)
            idle = self._idle  # wait for the socket or a wake first, see amqp_idle
            drain = timeout if buffer or not idle else idle.wait(conn.connection, timeout)
            if len(buffer) < limit and drain is not None:
                with suppress(TimeoutError):
                    conn.drain_events(timeout=0 if buffer else drain)
                    # What else has already arrived comes in the same call: a burst makes one
                    # trip through the consumer loop and one hand-off to its handlers.
                    if self.is_amqp:
                        amqp_reads.drain_ready(conn.connection, limit - len(buffer))
                    else:
                        for _ in range(limit - len(buffer)):
                            conn.drain_events(timeout=0)
            self._heartbeat_check(conn)
            if self._slow_start and self._suspects_cleared(buffer):
                self._open_up()
        if len(buffer) <= limit:
            self._buffer = deque()
            return list(buffer)
        return [buffer.popleft() for _ in range(limit)]

    def watch(self) -> None:
        """Paused: read what arrived (heartbeats) and check them (see consuming/paused_watch)."""
        conn = self._live()
        with self._translated("watch"):
            with suppress(TimeoutError):
                conn.drain_events(timeout=0)
            self._heartbeat_check(conn)

    def _suspects_cleared(self, fetched: deque[Delivery]) -> bool:
        """A non-suspect came, or a suspect has run alone long enough (see suspects.py)."""
        opened = [delivery for delivery in fetched if self._window.saw(delivery)]
        return bool(opened) or self._window.overdue()

    # -- inspection --------------------------------------------------------------------------------

    def depth(self) -> dict[str, int]:
        with self._translated("inspect"):
            assert self._conn is not None
            channel = self._conn.channel()  # a missing queue closes the channel it is asked on
            try:
                counts = {}
                for name in (self.spec.queue, self.spec.dead_letter):
                    _, count, _ = channel.queue_declare(queue=name, passive=True)
                    counts[name] = count
                return counts
            finally:
                with suppress(Exception):
                    channel.close()

    # -- errors ----------------------------------------------------------------------------------

    def _translated(self, action: str) -> Guard:
        """Hold the connection and map kombu, amqp and socket errors to ours (no secrets)."""
        self._guard.action = action
        return self._guard
