"""Settling messages of a Redis list: an ack is an ``LREM`` from the processing list, batched
(:mod:`.redis_list_acks`); retry and dead-letter copies replace the original in one script (see
:mod:`.redis_lists`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import redis

from consumer_host.clock import Clock
from consumer_host.message import Delivery

from .base import Place, QueueSpec
from .redis_common import Cadence, refused
from .redis_envelope import copy_envelope
from .redis_list_acks import ListAcks
from .suspects import SlowStart, is_suspect


class ListSettling:
    """Ack, retry, dead-letter and requeue of a :class:`~.redis_lists.RedisListTransport`."""

    url: str
    spec: QueueSpec
    keys_processing: str
    keys_delayed: str
    _clock: Clock
    _slow: SlowStart
    _acks: ListAcks
    _promotion: Cadence
    _settle_copy: Any
    _requeue: Any

    def _client(self) -> redis.Redis:
        raise NotImplementedError

    def _translated(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- settling ----------------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        self._acks.add(delivery.handle)
        self._slow.settled(delivery)
        if is_suspect(delivery):
            # Sent now: were a batch-mate to kill the process first, the recovery would count
            # one more delivery against this finished message, each time, up to max_deliveries.
            # Suspects come only after a crash; the steady state still batches.
            with self._translated("ack on"):
                self._acks.flush()

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        copy = copy_envelope(delivery, headers, self.spec.queue)
        due = self._clock.wall() + delay
        self._copy("retry", delivery, copy, target=self.keys_delayed, kind="zset", score=due)
        self._promotion.at(self._clock.now() + delay)

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        copy = copy_envelope(delivery, headers, self.spec.dead_letter)
        self._copy("dead-letter", delivery, copy, target=self.spec.dead_letter, kind="list")

    def _copy(
        self,
        action: str,
        delivery: Delivery,
        copy: str,
        *,
        target: str,
        kind: str,
        score: float = 0.0,
    ) -> None:
        """Replace the original by ``copy`` at ``target`` atomically, if it is still ours."""
        with self._translated(f"{action} on"):
            # The script finds the original by its bytes: finished ones go first (see
            # redis_list_acks).
            self._acks.flush()
            result = self._settle_copy(
                keys=[self.keys_processing, target, self.spec.queue],
                args=[delivery.handle, copy, kind, repr(score)],
                client=self._client(),
            )
        self._slow.settled(delivery)
        if isinstance(result, bytes | str):
            found = as_bytes(result).decode()
            key, found = (
                (self.spec.queue, found[6:]) if found.startswith("queue ") else (target, found)
            )
            raise refused(action, Place("on", self.url, self.spec.queue), key, found)

    def requeue(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        with self._translated("requeue on"):
            self._acks.flush()
            self._requeue(
                keys=[self.keys_processing, self.spec.queue],
                args=[delivery.handle for delivery in reversed(deliveries)],
                client=self._client(),
            )
        for delivery in deliveries:
            self._slow.settled(delivery, counts=False)


def as_bytes(item: bytes | str) -> bytes:
    return item if isinstance(item, bytes) else item.encode("utf-8")
