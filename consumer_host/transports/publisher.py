"""Publish JSON messages the way producers do: :class:`Publisher` (exported as
``consumer_host.Publisher``), ``Host.publish`` and ``consumer-host publish``.

Each broker's producer lives beside its transport (``transports.choose.producer_for``): on
RabbitMQ persistent, with publisher confirms and ``mandatory`` (a message no queue took is an
error, not a success); on Redis lists kombu's own JSON envelope by ``LPUSH``, so what it
publishes is exactly what a Celery or kombu producer would, and the publish returns once Redis
has answered the write; on Streams one ``XADD``. Middleware with a ``before_publish(queue,
headers)`` hook (``TracingMiddleware`` injects the trace context there) sees every message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .base import Producer
from .choose import producer_for


class Publisher:
    """A short-lived or long-lived producer of JSON messages for one broker URL (every URL a
    host accepts). Not thread-safe: one owner thread, or a lock (``Host.publish`` has one).

    ``middleware``: objects whose ``before_publish(queue, headers)`` may add headers.
    """

    def __init__(
        self, url: str, *, connect_timeout: float = 5.0, middleware: Iterable[Any] = ()
    ) -> None:
        self.url = url
        self._producer: Producer = producer_for(url, connect_timeout=connect_timeout)
        hooks = (getattr(m, "before_publish", None) for m in middleware)
        self._hooks = [hook for hook in hooks if callable(hook)]

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Publish ``body`` as JSON to ``queue`` (declared durable if missing) and return its
        message id once the broker has confirmed it; raise :class:`~consumer_host.BrokerError`
        (``BrokerUnavailable``, ``BrokerRefused``, or ``CopyRefused`` when nothing took it)."""
        message_id = message_id or str(uuid.uuid4())
        headers = dict(headers or {})
        for hook in self._hooks:
            hook(queue, headers)
        self._producer.publish(
            queue,
            json.dumps(body).encode(),
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            message_id=message_id,
        )
        return message_id

    def close(self) -> None:
        self._producer.close()
