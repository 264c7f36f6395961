"""Publishing on kombu that counts only what the broker confirmed *and* routed.

A copy (retry, dead letter) and a produced message go out persistent, with publisher confirms
and ``mandatory=True`` on RabbitMQ. RabbitMQ answers an unroutable mandatory message with
``basic.return`` and then ``basic.ack``: a confirm alone would count a message sent to a deleted
queue as delivered. So :class:`RoutedChannel` listens for returns on its channel, and
:func:`deliver` re-declares a missing target once before giving up with
:class:`~consumer_host.errors.CopyRefused`. A ``basic.nack`` (a full queue with
``x-overflow: reject-publish``) is a refusal too; the channel stays usable.

kombu's virtual transports (memory, filesystem, Redis through kombu) have neither confirms nor
returns: there a publish that did not raise counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import amqp.exceptions
from amqp.serialization import dumps
from kombu.connection import Connection

from consumer_host.errors import BrokerUnavailable, ConfigError, CopyRefused

from .amqp_nodes import NodeRotation
from .base import Place
from .broker import scheme_of
from .kombu_connection import AMQP_SCHEMES, open_node, translate

_CONFIRM_TIMEOUT = 30.0


class RoutedChannel:
    """A publishing channel that tells whether each message was confirmed and routed."""

    def __init__(self, channel: Any, *, amqp_broker: bool) -> None:
        self.channel = channel
        self._amqp = amqp_broker
        self._returned: str | None = None
        if amqp_broker:
            channel.events["basic_return"].add(self._on_return)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned = f"returned unroutable ({exc}) by exchange {exchange!r} key {routing_key!r}"

    def publish(
        self, body: bytes, routing_key: str, headers: dict[str, Any], properties: dict[str, Any]
    ) -> str | None:
        """Publish to ``routing_key`` through the default exchange; ``None`` when confirmed and
        routed, otherwise why not (``unroutable: ...``, ``nacked: ...``)."""
        channel = self.channel
        message = channel.prepare_message(
            body,
            properties.pop("priority", None),
            properties.pop("content_type", None),
            properties.pop("content_encoding", None),
            headers,
            properties,
        )
        if not self._amqp:
            channel.basic_publish(message, exchange="", routing_key=routing_key)
            return None
        self._returned = None
        try:
            channel.basic_publish(
                message,
                exchange="",
                routing_key=routing_key,
                mandatory=True,
                confirm_timeout=_CONFIRM_TIMEOUT,
            )
        except amqp.exceptions.MessageNacked:
            return f"nacked by the broker for {routing_key!r} (a full queue refusing publishes?)"
        if self._returned is not None:
            return f"unroutable: {self._returned}"
        return None


def renewed(conn: Connection, refused: RoutedChannel) -> RoutedChannel:
    """A new publishing channel in place of one a copy or message was refused on. RabbitMQ 3.10
    keeps what it knows of a quorum queue's leader per channel: a channel that first published
    to the queue while its leader's node was down was refused (nacks) until that node came back
    (7-13 s in tests/cluster), while a new channel was accepted once the new leader was elected
    (within 0.5 s)."""
    with contextlib.suppress(Exception):  # the old channel is dropped either way
        refused.channel.close()
    return RoutedChannel(conn.channel(), amqp_broker=True)


def deliver(  # noqa: PLR0917 - the message's parts, in publishing order
    routed: RoutedChannel,
    where: Place,
    redeclare: Callable[[], None],
    body: bytes,
    routing_key: str,
    headers: dict[str, Any],
    properties: dict[str, Any],
) -> None:
    """Publish, re-declaring the target once if it went missing; :class:`CopyRefused` if the
    broker still refuses or cannot route the message."""
    refused = routed.publish(body, routing_key, headers, dict(properties))
    if refused is not None and refused.startswith("unroutable"):
        redeclare()  # someone deleted the queue after we declared it
        refused = routed.publish(body, routing_key, headers, dict(properties))
    if refused is not None:
        raise CopyRefused(f"cannot {where}: {refused}")


def declare_queue(
    conn: Connection, name: str, *, arguments: dict[str, Any] | None = None, strict: bool = False
) -> None:
    """Declare a durable queue on a channel of its own (a refused declare closes its channel).

    With ``strict=False`` an existing queue with other arguments (an operator's ``x-max-length``,
    a quorum queue) is used as it is: RabbitMQ refuses the declare with PRECONDITION_FAILED, and a
    passive declare on a fresh channel checks it exists.
    """
    channel = conn.channel()
    try:
        channel.queue_declare(
            queue=name, durable=True, auto_delete=False, arguments=arguments or None
        )
    except amqp.exceptions.PreconditionFailed:
        if strict:
            raise
        channel = conn.channel()
        channel.queue_declare(queue=name, passive=True)
    finally:
        with contextlib.suppress(Exception):
            channel.close()


def encodable_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` as they are when AMQP can encode them; otherwise with each value that cannot
    be encoded (a table nested too deep, an unsupported type) replaced by a short string."""
    with contextlib.suppress(Exception):  # when it fails, decide value by value below
        dumps("F", [headers])
        return headers
    safe: dict[str, Any] = {}
    for key, value in headers.items():
        try:
            dumps("F", [{key: value}])
            safe[key] = value
        except Exception as exc:  # noqa: BLE001 - anything a producer or handler put there
            safe[key] = f"unencodable {type(value).__name__} ({type(exc).__name__})"
    return safe


#: AMQP 0-9-1 carries queue names as short strings: at most 255 bytes of UTF-8.
AMQP_NAME_BYTES = 255


def check_amqp_name(name: str, what: str = "queue") -> None:
    """A name RabbitMQ cannot carry is the user's mistake, said in one line (py-amqp would
    fail deep in its frame packing)."""
    if len(name.encode()) > AMQP_NAME_BYTES:
        raise ConfigError(
            f"{what} name of {len(name.encode())} bytes is too long for RabbitMQ "
            f"(at most {AMQP_NAME_BYTES})"
        )


class KombuProducer:
    """Publish to queues on one kombu broker URL: declared durable once, persistent, confirmed
    and routed on RabbitMQ. Not thread-safe: one owner thread.

    On a cluster's failover URL it connects to the first node that answers, and a message whose
    confirm was lost with its connection is published again on the next node before
    :meth:`publish` returns: never assumed delivered (a duplicate at worst)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._amqp = scheme_of(url) in AMQP_SCHEMES
        self._connect_timeout = connect_timeout
        self._nodes = NodeRotation(url)
        self._conn: Connection | None = None
        self._routed: RoutedChannel | None = None
        self._declared: set[str] = set()

    @property
    def node(self) -> str | None:
        """The node published to now (password masked), or ``None``."""
        return self._nodes.masked_node or None

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        message_id: str,
    ) -> None:
        """Publish ``body`` to ``queue``; raise BrokerRefused, BrokerUnavailable or CopyRefused
        (ConfigError for a name RabbitMQ cannot carry)."""
        if self._amqp:
            check_amqp_name(queue)
        properties = {
            "content_type": content_type,
            "content_encoding": content_encoding,
            "delivery_mode": 2,
            "message_id": message_id,
        }
        while True:
            try:
                self._publish_once(queue, body, headers, properties)
                return
            except BrokerUnavailable:
                # The connection went with the confirm: on a cluster, again on the next node.
                if not self._nodes.lost():
                    raise

    def _publish_once(
        self, queue: str, body: bytes, headers: dict[str, Any], properties: dict[str, Any]
    ) -> None:
        routed, conn = self._channel(queue)
        where = Place("publish to", self._nodes.node or self.url, queue)
        try:
            if queue not in self._declared:
                declare_queue(conn, queue)
                self._declared.add(queue)
            deliver(
                routed,
                where,
                lambda: declare_queue(conn, queue),
                body,
                queue,
                encodable_headers(headers),
                properties,
            )
        except CopyRefused:
            if self._amqp:
                self._routed = renewed(conn, routed)
            raise
        except Exception as exc:
            error = translate(exc, where, conn)
            if error is None:
                raise
            self._drop()  # the channel may be closed; open another next time
            raise error from exc

    def _channel(self, queue: str) -> tuple[RoutedChannel, Connection]:
        if self._routed is None or self._conn is None:
            self._nodes.connect(lambda node: self._open(node, queue))
        assert self._routed is not None
        assert self._conn is not None
        return self._routed, self._conn

    def _open(self, node: str, queue: str) -> None:
        conn = open_node(node, queue, connect_timeout=self._connect_timeout)
        try:
            self._routed = RoutedChannel(conn.channel(), amqp_broker=self._amqp)
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.collect()
            error = translate(exc, Place("open a channel on", node, queue), conn)
            if error is None:
                raise
            raise error from exc
        self._conn = conn
        self._declared.clear()

    def _drop(self) -> None:
        self._routed = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.collect()
            self._conn = None

    def close(self) -> None:
        """Close the connection. Never raises."""
        self._routed = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.release()
