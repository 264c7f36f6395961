"""Settling entries of a Redis Stream: batched acks, and retry and dead-letter copies that
replace the original in one script (see :mod:`.redis_streams`)."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from typing import Any

import redis

from consumer_host.clock import Clock
from consumer_host.message import Delivery

from .base import Place, QueueSpec
from .redis_common import Cadence, refused
from .redis_stream_acks import StreamAcks
from .redis_stream_entries import entry_fields
from .suspects import SlowStart


class StreamSettling:
    """Ack, retry, dead-letter and requeue of a :class:`~.redis_streams.RedisStreamsTransport`."""

    url: str
    spec: QueueSpec
    group: str
    consumer: str
    keys_prefix: str
    keys_delayed: str
    _clock: Clock
    _acks: StreamAcks
    _slow: SlowStart
    _claimed: set[bytes]
    _promotion: Cadence
    _settle_copy: Any

    def _client(self) -> redis.Redis:
        raise NotImplementedError

    def _translated(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def ack(self, delivery: Delivery) -> None:
        self._acks.add(delivery.handle)
        self._settled(delivery)

    def _settled(self, delivery: Delivery, *, counts: bool = True) -> None:
        self._slow.settled(delivery, counts=counts)
        self._claimed.discard(delivery.handle)

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        held = f"{self.keys_prefix}retry:{uuid.uuid4().hex}"
        score = self._clock.wall() + delay
        self._copy("retry", delivery, headers, target=self.keys_delayed, score=score, held=held)
        self._promotion.at(self._clock.now() + delay)

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        self._copy("dead-letter", delivery, headers, target=self.spec.dead_letter)

    def _copy(
        self,
        action: str,
        delivery: Delivery,
        headers: dict[str, Any],
        *,
        target: str,
        score: float = 0.0,
        held: str = "",
    ) -> None:
        """Replace the entry by a copy at ``target`` atomically, if it is still pending on us."""
        fields = self._fields(delivery, headers)
        kind = "zset" if held else "stream"
        args: list[Any] = [self.group, self.consumer, delivery.handle, kind, repr(score)]
        for name, value in fields.items():
            args += [name, value]
        with self._translated(f"{action} on"):
            result = self._settle_copy(
                keys=[self.spec.queue, target, held or target], args=args, client=self._client()
            )
        self._settled(delivery)
        self._acks.sent = True
        if isinstance(result, bytes | str):
            raise refused(action, Place("on", self.url, self.spec.queue), target, result)

    def requeue(self, deliveries: list[Delivery]) -> None:
        """A stream cannot un-read: put copies at the end and ack the originals that are still
        pending on us, each in one script."""
        if not deliveries:
            return
        client = self._client()
        with self._translated("requeue on"):
            for delivery in deliveries:
                args: list[Any] = [self.group, self.consumer, delivery.handle, "stream", "0"]
                for name, value in self._fields(delivery, delivery.headers).items():
                    args += [name, value]
                self._settle_copy(
                    keys=[self.spec.queue, self.spec.queue, self.spec.queue],
                    args=args,
                    client=client,
                )
                self._settled(delivery, counts=False)

    @staticmethod
    def _fields(delivery: Delivery, headers: dict[str, Any]) -> dict[Any, Any]:
        return entry_fields(
            delivery.body,
            delivery.content_type,
            delivery.content_encoding,
            headers,
            delivery.message_id or str(uuid.uuid4()),
        )
