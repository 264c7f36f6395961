"""What the harness records in place of a broker: settlements and published messages."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from consumer_host.consuming.middleware import OutcomeKind
from consumer_host.message import Delivery, Message
from consumer_host.transports.base import QueueSpec


@dataclass(frozen=True, kw_only=True)
class Settled:
    """What became of one message.

    ``outcome``: ``acked``, ``retried``, ``deferred``, ``dead_lettered`` or
    ``rejected_bad_input``. ``headers``: those of the copy the broker would get (a retry's with
    ``x-attempt``; a dead letter's with ``x-error``, ``x-error-type``, ``x-attempts``, ...), or
    the message's own when acked. ``queue``: where it went (the dead-letter queue for dead
    letters). ``delay``: seconds before a retried or deferred copy comes back.
    """

    outcome: OutcomeKind
    attempt: int
    queue: str
    headers: dict[str, Any]
    delay: float | None = None
    error: BaseException | None = None
    message: Message | None = None
    """What the handler got (``None`` for bad input)."""
    key: Any = None
    """The ``partition_by`` key."""
    delivery: Delivery = field(repr=False)


class RecordingTransport:
    """The settling half of a transport, recording each call instead of talking to a broker.

    ``spec``: the queues it settles for, as a real transport's ``spec`` (the harness gives each
    consumer's ``options.queue_spec()``, so dead letters are named as configured)."""

    delays_retries = True

    def __init__(self, spec: QueueSpec | None = None) -> None:
        self.spec = spec
        self.acked: list[Delivery] = []
        self.retried: list[tuple[Delivery, dict[str, Any], float]] = []
        self.dead_lettered: list[tuple[Delivery, dict[str, Any]]] = []

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery)

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        self.retried.append((delivery, headers, delay))

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        self.dead_lettered.append((delivery, headers))


class RecordingPublisher:
    """Stands in for ``host.publish`` under a harness: records, with the middleware's headers."""

    def __init__(self, middleware: list[Any]) -> None:
        self.messages: list[dict[str, Any]] = []
        self._middleware = middleware

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        headers = dict(headers or {})
        for middleware in self._middleware:
            hook = getattr(middleware, "before_publish", None)
            if callable(hook):
                hook(queue, headers)
        message_id = message_id or str(uuid.uuid4())
        json.dumps(body)  # what the real publisher would refuse, this refuses too
        self.messages.append(
            {"queue": queue, "body": body, "headers": headers, "message_id": message_id}
        )
        return message_id

    def close(self) -> None:
        return
