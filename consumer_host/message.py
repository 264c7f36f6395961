"""What a handler receives, and what a transport hands the consumer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Header that carries the delivery attempt (1 on first delivery), set when a message is retried.
ATTEMPT_HEADER = "x-attempt"
#: Properties a retried or dead-lettered copy keeps (the broker sets the rest). Not
#: ``expiration``: a dead letter must stay, and a retry's clock would restart anyway.
COPIED_PROPERTIES = (
    "message_id",
    "correlation_id",
    "reply_to",
    "priority",
    "type",
    "app_id",
    "timestamp",
)
#: Header that holds a retried message back until this wall-clock time (transports without TTLs).
RETRY_AT_HEADER = "x-retry-at"


@dataclass(slots=True, kw_only=True)
class Delivery:
    """One message as fetched from a broker, not yet decoded. Owned by the fetching thread."""

    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any]
    properties: dict[str, Any]
    delivery_info: dict[str, Any]
    redelivered: bool = False
    delivery_count: int | None = None
    """How often the broker has handed this message out, this time included, where it knows:
    Streams' times-delivered, a quorum queue's ``x-delivery-count`` + 1, the Redis list
    transport's recovery count + 1. ``None`` where the broker keeps no count."""
    defect: str | None = None
    """Why the transport could not parse what the producer sent (``reason: detail``); the
    consumer dead-letters such a delivery at once, with ``body`` holding the raw bytes."""
    handle: Any = None
    """The transport's own handle for acking (a kombu message, a raw Redis entry, ...)."""

    @property
    def message_id(self) -> str | None:
        value = self.properties.get("message_id") or self.headers.get("id")
        return None if value is None else str(value)

    @property
    def first_delivery(self) -> bool:
        """Neither flagged redelivered nor counted more than once: no crash has seen it."""
        return not self.redelivered and (self.delivery_count or 1) <= 1

    @property
    def attempt(self) -> int:
        value = self.headers.get(ATTEMPT_HEADER, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return 1
        return value


@dataclass(slots=True, kw_only=True)
class Message:
    """A decoded message, handed to a handler.

    Returning from the handler acks it; raising retries it (up to ``max_retries``, then
    dead-letters it); raising :class:`consumer_host.Reject` dead-letters it at once.
    """

    body: Any
    headers: dict[str, Any]
    content_type: str | None
    message_id: str | None
    delivery_info: dict[str, Any]
    redelivered: bool
    attempt: int
    queue: str
    raw: bytes = field(repr=False)
