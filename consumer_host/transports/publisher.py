"""Publish JSON messages the way producers do, for ``consumer-host publish`` and the example's
producer worker.

Each broker's producer lives beside its transport (``transports.choose.producer_for``): on
RabbitMQ persistent, confirmed and routed; on Redis lists kombu's own envelope, so what it
publishes is exactly what a Celery or kombu producer would; on Streams one ``XADD``.
"""

from __future__ import annotations

import json
import uuid
from types import TracebackType
from typing import Any

from .base import Producer
from .choose import producer_for


class Publisher:
    """A short-lived or long-lived producer of JSON messages for one broker URL."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._producer: Producer = producer_for(url, connect_timeout=connect_timeout)

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
        """Publish ``body`` as JSON to ``queue``; return its message id."""
        message_id = message_id or str(uuid.uuid4())
        self._producer.publish(
            queue,
            json.dumps(body).encode(),
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers or {},
            message_id=message_id,
        )
        return message_id

    def close(self) -> None:
        self._producer.close()
