"""Retry and dead-letter copies on kombu: where they go, and publishing them confirmed and routed.

On RabbitMQ a retried message waits in a per-delay queue ``<queue>.retry.<ms>`` whose TTL
dead-letters it back to ``<queue>`` through the default exchange; kombu's virtual transports have
no TTLs, so there the copy goes straight back to ``<queue>`` (the caller adds ``x-retry-at``).
"""

from __future__ import annotations

from typing import Any

from kombu.connection import Connection

from consumer_host.errors import ConfigError
from consumer_host.message import COPIED_PROPERTIES, Delivery

from .base import Place, QueueSpec
from .kombu_producer import (
    AMQP_NAME_BYTES,
    RoutedChannel,
    check_amqp_name,
    declare_queue,
    deliver,
    encodable_headers,
)

#: What a retry queue adds to the queue's name: ``.retry.`` and a delay of up to 10 digits (ms).
RETRY_SUFFIX_BYTES = len(".retry.") + 10


def check_amqp_names(spec: QueueSpec) -> None:
    """Refuse, at start, names RabbitMQ cannot carry: a queue whose retry queues would pass
    255 bytes would otherwise fail its first retry, inside the loop, after the first failure."""
    queue_room = AMQP_NAME_BYTES - RETRY_SUFFIX_BYTES
    if len(spec.queue.encode()) > queue_room:
        raise ConfigError(
            f"queue name of {len(spec.queue.encode())} bytes is too long for RabbitMQ: at most "
            f"{queue_room} (its retry queues add up to {RETRY_SUFFIX_BYTES} to the 255 AMQP allows)"
        )
    check_amqp_name(spec.dead_letter, "dead-letter queue")


def copy_queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """What a retry or dead-letter queue takes from the main queue: its type. On a cluster a
    quorum queue survives the loss of a node; a classic copy queue on that node would refuse
    every retry and dead letter until it returns."""
    kind = (spec.queue_arguments or {}).get("x-queue-type")
    return {"x-queue-type": kind} if kind == "quorum" else {}


def retry_queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """A quorum retry queue dead-letters its expired copies back to the main queue
    at-least-once (RabbitMQ 3.10+): the default, at-most-once, may drop a copy between the two
    queues. At-least-once requires ``x-overflow: reject-publish``."""
    arguments = copy_queue_arguments(spec)
    if arguments:
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


def declare_dead_letter_queue(conn: Connection, spec: QueueSpec) -> None:
    """The dead-letter queue, of the main queue's type (an existing one is used as it is)."""
    declare_queue(conn, spec.dead_letter, arguments=copy_queue_arguments(spec) or None)


class Copies:
    """The copy targets of one consumer's queue, declared once per connection."""

    def __init__(self, url: str, spec: QueueSpec, *, is_amqp: bool) -> None:
        self.url = url
        self.spec = spec
        self.is_amqp = is_amqp
        self._declared: set[str] = set()

    def forget_declarations(self) -> None:
        """A new connection: declare retry queues again before their first use."""
        self._declared.clear()

    def retry_queue(self, conn: Connection, delay: float) -> str:
        ttl_ms = max(1, round(delay * 1000))
        name = f"{self.spec.queue}.retry.{ttl_ms}"
        if name not in self._declared:
            self._declare_retry_queue(conn, name, ttl_ms)
            self._declared.add(name)
        return name

    def _declare_retry_queue(self, conn: Connection, name: str, ttl_ms: int) -> None:
        arguments = {
            "x-message-ttl": ttl_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.spec.queue,
            **retry_queue_arguments(self.spec),
        }
        declare_queue(conn, name, arguments=arguments)

    def publish(
        self,
        conn: Connection,
        routed: RoutedChannel,
        delivery: Delivery,
        target: str,
        headers: dict[str, Any],
    ) -> None:
        """Publish a copy of ``delivery`` to ``target``, confirmed and routed, or raise
        :class:`~consumer_host.errors.CopyRefused`."""
        props = delivery.properties
        properties = {k: props[k] for k in COPIED_PROPERTIES if props.get(k) is not None}
        properties["content_type"] = delivery.content_type or "application/data"
        properties["content_encoding"] = delivery.content_encoding or "binary"
        properties["delivery_mode"] = 2
        if target == self.spec.dead_letter:
            redeclare = lambda: declare_dead_letter_queue(conn, self.spec)  # noqa: E731
        else:
            ttl_ms = int(target.rsplit(".", 1)[1]) if self.is_amqp else 0
            redeclare = lambda: self._declare_retry_queue(conn, target, ttl_ms)  # noqa: E731
        where = Place(f"copy to {target!r} from", self.url, self.spec.queue)
        deliver(
            routed, where, redeclare, delivery.body, target, encodable_headers(headers), properties
        )
