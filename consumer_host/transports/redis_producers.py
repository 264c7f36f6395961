"""Publishing to Redis the way producers do: lists in kombu's envelope, streams by XADD.

Both producers take bytes and their content type and encoding as they are (the caller
serializes), and map every redis-py error through the transports' one translator.
"""

from __future__ import annotations

from typing import Any

from .redis_common import RedisProducer, translated
from .redis_envelope import write_envelope
from .redis_stream_entries import entry_fields, plain_url

__all__ = ["RedisListProducer", "StreamsProducer"]


class RedisListProducer(RedisProducer):
    """Publishes to a Redis list exactly as kombu and Celery producers do: kombu's JSON
    envelope, ``LPUSH``, so consumers on kombu and on consumer-host both read it."""

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
        envelope = write_envelope(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers,
            properties={"message_id": message_id},
            routing_key=queue,
        )
        with translated("publish to", self.url, queue):
            self._redis.lpush(queue, envelope)


class StreamsProducer(RedisProducer):
    """Publishes stream entries (``XADD``) with the fields :func:`entry_fields` describes."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__(plain_url(url), connect_timeout=connect_timeout)
        self.url = url

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
        fields = entry_fields(body, content_type, content_encoding, headers, message_id)
        with translated("publish to", self.url, queue):
            self._redis.xadd(queue, fields)
