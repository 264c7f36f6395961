"""Publish messages the way producers do: JSON bodies, persistent, confirmed where the broker can.

Used by ``consumer-host publish`` and by the example's producer worker. On Redis it writes
kombu's envelope with kombu itself, so what it publishes is exactly what a Celery or kombu
producer would.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from types import TracebackType
from typing import Any

import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

from .broker import REDIS_SCHEMES, STREAMS_SCHEMES, scheme_of
from .errors import BrokerError, BrokerRefused, BrokerUnavailable
from .redaction import redact_text, redact_url
from .transports.kombu_transport import connection_options
from .transports.redis_streams import entry_fields, plain_url


class Publisher:
    """A short-lived or long-lived producer for one broker URL."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        scheme = scheme_of(url)
        self.url = url
        self._streams: redis.Redis | None = None
        if scheme in STREAMS_SCHEMES:
            self._streams = redis.Redis.from_url(
                plain_url(url), socket_connect_timeout=connect_timeout
            )
        if scheme in REDIS_SCHEMES | STREAMS_SCHEMES:
            options: dict[str, Any] = {"connect_timeout": connect_timeout}
        else:
            options = connection_options(url, heartbeat=0, connect_timeout=connect_timeout)
        # kombu connects lazily: for a stream this object is never used.
        kombu_url = plain_url(url) if scheme in STREAMS_SCHEMES else url
        self._conn = Connection(kombu_url, **options)  # type: ignore[no-untyped-call]
        self._declared: set[str] = set()

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
        if self._streams is not None:
            self._xadd(queue, body, headers or {}, message_id)
            return message_id
        try:
            self._conn.ensure_connection(max_retries=0)  # type: ignore[no-untyped-call]
            channel = self._conn.default_channel
            declare = []
            if queue not in self._declared:
                declare = [Queue(queue, Exchange(""), routing_key=queue, durable=True)]  # type: ignore[no-untyped-call]
            Producer(channel).publish(  # type: ignore[no-untyped-call]
                body,
                exchange="",
                routing_key=queue,
                serializer="json",
                headers=headers or {},
                message_id=message_id,
                delivery_mode=2,
                declare=declare,
                retry=False,
            )
            self._declared.add(queue)
        except BrokerError:
            raise
        except Exception as exc:
            text = redact_text(str(exc.__cause__ or exc))
            kind = type(exc.__cause__ or exc).__name__
            error = (
                BrokerRefused
                if "ACCESS_REFUSED" in text or "NOT_ALLOWED" in text
                else (BrokerUnavailable)
            )
            raise error(f"cannot publish to {redact_url(self.url)}: {kind}: {text}") from exc
        return message_id

    def _xadd(self, stream: str, body: Any, headers: dict[str, Any], message_id: str) -> None:
        assert self._streams is not None
        fields = entry_fields(
            json.dumps(body).encode(), "application/json", "utf-8", headers, message_id
        )
        try:
            self._streams.xadd(stream, fields)
        except redis.RedisError as exc:
            raise BrokerUnavailable(
                f"cannot publish to {redact_url(self.url)}: {type(exc).__name__}: "
                f"{redact_text(str(exc))}"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self._conn.release()  # type: ignore[no-untyped-call]
        if self._streams is not None:
            self._streams.close()
