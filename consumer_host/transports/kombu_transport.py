"""Consumers on kombu: RabbitMQ through py-amqp, and kombu's in-process and filesystem brokers.

On RabbitMQ a retried message waits in a per-delay queue ``<queue>.retry.<ms>`` whose TTL
dead-letters it back to ``<queue>`` through the default exchange; kombu's virtual transports have
no TTLs, so there the copy goes straight back with an ``x-retry-at`` header and the consumer
holds it until then. Copies are published on a second channel with publisher confirms before the
original is acked.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import amqp.exceptions
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.messaging import Consumer, Producer

from consumer_host.broker import embedded_broker_folder, scheme_of
from consumer_host.errors import BrokerError, BrokerRefused, BrokerUnavailable
from consumer_host.message import COPIED_PROPERTIES, RETRY_AT_HEADER, Delivery
from consumer_host.redaction import redact_text, redact_url

from .base import Place, QueueSpec

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
_CLOSE_TIMEOUT = 2.0
_PERMANENT = (
    amqp.exceptions.AccessRefused,
    amqp.exceptions.NotAllowed,
    amqp.exceptions.PreconditionFailed,
    amqp.exceptions.NotFound,
    ssl.SSLCertVerificationError,
)


def connection_options(url: str, *, heartbeat: float, connect_timeout: float) -> dict[str, Any]:
    """kombu ``Connection`` keyword arguments for ``url``, TLS verified by default."""
    scheme = scheme_of(url)
    options: dict[str, Any] = {"connect_timeout": connect_timeout}
    if scheme in AMQP_SCHEMES:
        options["heartbeat"] = heartbeat
        options["transport_options"] = {"confirm_publish": True}
        if scheme == "amqps":
            # py-amqp's plain ``cert_reqs`` path builds a context with no CA certificates and no
            # hostname check; ask it for ssl.create_default_context() with both instead.
            options["ssl"] = {
                "context": {"check_hostname": True},
                "server_hostname": urlsplit(url).hostname,
            }
    elif scheme == "filesystem":
        folder = embedded_broker_folder(url)
        for sub in ("queue", "control", "processed"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        options["transport_options"] = {
            "data_folder_in": os.path.join(folder, "queue"),
            "data_folder_out": os.path.join(folder, "queue"),
            "control_folder": os.path.join(folder, "control"),
            "processed_folder": os.path.join(folder, "processed"),
            "polling_interval": 0.1,
        }
    else:
        options["transport_options"] = {"polling_interval": 0.05}
    return options


class KombuTransport:
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
    ) -> None:
        self.url = url
        self.spec = spec
        self.is_amqp = scheme_of(url) in AMQP_SCHEMES
        self.delays_retries = self.is_amqp
        self._heartbeat = heartbeat if self.is_amqp else 0.0
        self._options = connection_options(
            url, heartbeat=heartbeat, connect_timeout=connect_timeout
        )
        self._conn: Connection | None = None
        self._channel: Any = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._buffer: list[Delivery] = []
        self._declared_retry_queues: set[str] = set()
        self._queue = self._main_queue()
        self._last_heartbeat_check = 0.0
        # Held for every use of the connection; free while a handler runs, so the keeper can
        # send heartbeats on an otherwise idle connection without interleaving frames.
        self._io = threading.Lock()
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None
        # Ack coalescing (AMQP): one basic.ack(multiple=True) for a run of handled deliveries.
        # Deliveries are settled strictly in order on this one thread, so "everything up to
        # this tag" is exactly what was handled; a crash can only add redeliveries.
        self._coalesce = ack_coalescing and self.is_amqp
        self._max_ack_delay = max_ack_delay
        self._ack_batch = max(1, spec.prefetch // 2)
        self._unacked_tag: int | None = None
        self._unacked_count = 0
        self._unacked_since = 0.0
        self._guard = _Guard(self)

    # -- connection -----------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        conn = Connection(self.url, **self._options)
        self._conn = conn
        with self._translated("connect to"):
            # No retries here: the consumer backs off through the shared broker circuit.
            conn.ensure_connection(max_retries=0)
            self._channel = conn.channel()
            if self.is_amqp:
                # py-amqp would turn bodies into text using their declared encoding; the
                # consumer decodes (and judges) the exact bytes that were sent instead.
                self._channel.auto_decode = False
            self._producer = Producer(conn.channel())
            self._declare()
        if self._heartbeat:
            self._keeper_stop = threading.Event()
            self._keeper = threading.Thread(
                target=self._keep_alive, name=f"heartbeat:{self.spec.queue}", daemon=True
            )
            self._keeper.start()

    def _main_queue(self) -> Queue:
        spec = self.spec
        if spec.exchange:
            exchange = Exchange(spec.exchange, type="direct", durable=True)
            return Queue(
                spec.queue, exchange, routing_key=spec.routing_key or spec.queue, durable=True
            )
        return Queue(spec.queue, Exchange(""), routing_key=spec.queue, durable=True)

    def _declare(self) -> None:
        self._queue.bind(self._channel).declare()
        Queue(
            self.spec.dead_letter, Exchange(""), routing_key=self.spec.dead_letter, durable=True
        ).bind(self._channel).declare()
        self._declared_retry_queues.clear()

    def start_consuming(self) -> None:
        with self._translated("consume from"):
            self._consumer = Consumer(
                self._channel,
                queues=[self._queue],
                on_message=self._on_message,
                accept=["json"],  # never used to decode (we do), but keeps pickle out regardless
                prefetch_count=self.spec.prefetch,
                no_ack=False,
            )
            self._consumer.consume()

    def stop_consuming(self) -> None:
        if self._consumer is not None:
            with self._translated("cancel the consumer of"):
                self._flush_acks()
                self._consumer.cancel()
            self._consumer = None

    def close(self) -> None:
        """Close politely, but never wait more than a couple of seconds for the broker."""
        channel = self._channel
        conn = self._forget()
        if conn is None:
            return
        with self._io, suppress(Exception):  # a failing close still leaves us disconnected
            sock = getattr(getattr(conn.connection, "transport", None), "sock", None)
            if sock is not None:
                sock.settimeout(_CLOSE_TIMEOUT)
            if channel is not None and self._unacked_tag is not None:
                channel.basic_ack(self._unacked_tag, multiple=True)
            conn.release()
        with suppress(Exception):
            conn.collect()

    def discard(self) -> None:
        """Drop a connection that failed, without a word to the broker: a black-holed
        connection would never answer a polite close."""
        conn = self._forget()
        if conn is not None:
            with self._io, suppress(Exception):
                conn.collect()

    def _forget(self) -> Connection | None:
        self._keeper_stop.set()
        conn, self._conn = self._conn, None
        self._consumer = None
        self._producer = None
        self._channel = None
        self._buffer = []
        self._unacked_tag = None
        self._unacked_count = 0
        return conn

    # -- consuming --------------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        props = message.properties
        self._buffer.append(
            Delivery(
                body=_as_bytes(message.body, message.content_encoding),
                content_type=message.content_type or None,
                content_encoding=message.content_encoding or None,
                headers=message.headers if isinstance(message.headers, dict) else {},
                properties=props,
                delivery_info=message.delivery_info,
                redelivered=bool(message.delivery_info.get("redelivered")),
                handle=message,
            )
        )

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        conn = self._conn
        if conn is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}")
        with self._translated("read from"):
            if self._unacked_tag is not None:
                due = self._unacked_since + self._max_ack_delay - time.monotonic()
                if due <= 0:
                    self._flush_acks()
                else:
                    timeout = min(timeout, due)
            with suppress(TimeoutError):
                conn.drain_events(timeout=timeout)
            self._heartbeat_check(conn)
        deliveries, self._buffer = self._buffer, []
        return deliveries

    def _heartbeat_check(self, conn: Connection) -> None:
        if not self._heartbeat:
            return
        now = time.monotonic()
        # Often enough that a dead link is noticed within two heartbeats plus a fraction.
        if now - self._last_heartbeat_check >= min(1.0, self._heartbeat / 8):
            self._last_heartbeat_check = now
            conn.heartbeat_check()

    def _keep_alive(self) -> None:
        """While a long handler runs, tell the broker we are alive (frames sent only, no reads)."""
        interval = max(0.5, self._heartbeat / 3)
        while not self._keeper_stop.wait(interval):
            if not self._io.acquire(blocking=False):
                continue  # the consumer thread is using the connection, and so sends heartbeats
            try:
                conn = self._conn
                if conn is not None and conn.connection is not None:
                    conn.connection.send_heartbeat()
            except Exception:  # noqa: BLE001, S110 - the consumer thread will see the failure
                pass
            finally:
                self._io.release()

    # -- settling ---------------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        with self._translated("ack on"):
            self._ack(delivery)

    def _ack(self, delivery: Delivery) -> None:
        if not self._coalesce:
            delivery.handle.ack()
            return
        if self._unacked_tag is None:
            self._unacked_since = time.monotonic()
        self._unacked_tag = delivery.handle.delivery_tag
        self._unacked_count += 1
        if self._unacked_count >= self._ack_batch:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._unacked_tag is not None and self._channel is not None:
            self._channel.basic_ack(self._unacked_tag, multiple=True)
        self._unacked_tag = None
        self._unacked_count = 0

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        with self._translated("retry on"):
            if self.is_amqp:
                target = self._retry_queue(delay)
            else:
                target = self.spec.queue
                headers = {**headers, RETRY_AT_HEADER: time.time() + delay}
            self._publish_copy(delivery, target, headers)
            self._ack(delivery)

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        with self._translated("dead-letter on"):
            self._publish_copy(delivery, self.spec.dead_letter, headers)
            self._ack(delivery)

    def requeue(self, deliveries: list[Delivery]) -> None:
        with self._translated("requeue on"):
            self._flush_acks()
            for delivery in deliveries:
                delivery.handle.reject(requeue=True)

    def _retry_queue(self, delay: float) -> str:
        ttl_ms = max(1, round(delay * 1000))
        name = f"{self.spec.queue}.retry.{ttl_ms}"
        if name not in self._declared_retry_queues:
            Queue(
                name,
                Exchange(""),
                routing_key=name,
                durable=True,
                queue_arguments={
                    "x-message-ttl": ttl_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.spec.queue,
                },
            ).bind(self._channel).declare()
            self._declared_retry_queues.add(name)
        return name

    def _publish_copy(self, delivery: Delivery, routing_key: str, headers: dict[str, Any]) -> None:
        assert self._producer is not None
        properties = {
            k: delivery.properties[k]
            for k in COPIED_PROPERTIES
            if delivery.properties.get(k) is not None
        }
        self._producer.publish(
            delivery.body,
            exchange="",
            routing_key=routing_key,
            content_type=delivery.content_type or "application/data",
            content_encoding=delivery.content_encoding or "binary",
            headers=headers,
            delivery_mode=2,
            retry=False,
            **properties,
        )

    # -- inspection --------------------------------------------------------------------------------

    def depth(self) -> dict[str, int]:
        with self._translated("inspect"):
            counts = {}
            for name in (self.spec.queue, self.spec.dead_letter):
                _, count, _ = self._channel.queue_declare(queue=name, passive=True)
                counts[name] = count
            return counts

    # -- errors ----------------------------------------------------------------------------------

    def _translated(self, action: str) -> _Guard:
        """Hold the connection and map kombu, amqp and socket errors to ours (no secrets)."""
        self._guard.action = action
        return self._guard


class _Guard:
    """The context every use of the connection runs in: the I/O lock, and error translation.

    One reusable object per transport rather than a generator-based context manager: it runs
    twice per message, and the difference shows in the benchmark.
    """

    __slots__ = ("action", "transport")

    def __init__(self, transport: KombuTransport) -> None:
        self.transport = transport
        self.action = ""

    def __enter__(self) -> None:
        self.transport._io.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        transport = self.transport
        transport._io.release()
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, BrokerError):
            return
        where = Place(self.action, transport.url, transport.spec.queue)
        if isinstance(exc, OperationalError):
            raise _classify(exc.__cause__ or exc, where) from exc
        if isinstance(exc, (*_PERMANENT, socket.gaierror, OSError, *_errors_of(transport._conn))):
            raise _classify(exc, where) from exc


def _as_bytes(body: Any, encoding: str | None) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    # kombu's virtual transports hand over text for text content encodings: undo that.
    try:
        return str(body).encode(encoding or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return str(body).encode("utf-8", errors="surrogateescape")


def _classify(exc: BaseException, where: Place) -> BrokerRefused | BrokerUnavailable:
    if isinstance(exc, _PERMANENT):
        return BrokerRefused(f"cannot {where}: {_describe(exc)}")
    if isinstance(exc, socket.gaierror):
        return BrokerUnavailable(f"cannot {where}: cannot resolve host ({exc})")
    return BrokerUnavailable(f"cannot {where}: {_describe(exc)}")


def _errors_of(conn: Connection | None) -> tuple[type[BaseException], ...]:
    if conn is None:
        return ()
    try:
        return (*conn.connection_errors, *conn.channel_errors)
    except Exception:  # noqa: BLE001 - a transport that failed to load has no error list
        return ()


def _describe(exc: BaseException) -> str:
    text = redact_text(str(exc)) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
