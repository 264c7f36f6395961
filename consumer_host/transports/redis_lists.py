"""Consumers on Redis lists that lose nothing, compatible with kombu and Celery producers.

kombu's own Redis transport fetches with BRPOP, which removes a message before it is recorded as
unacked: a kill or a reset at the wrong moment loses it, and a killed consumer's unacked
messages stay hidden for the visibility timeout (an hour). Here a fetch is one atomic
``BLMOVE queue -> processing list`` (the reliable-queue pattern of Sidekiq's super_fetch):

* the message is always in exactly one Redis list; an ack is ``LREM`` from the processing list;
* every consumer has its own processing list and an ``alive`` key it refreshes from a keeper
  thread (so a long handler does not look dead); any consumer moves the processing lists of
  consumers whose ``alive`` key expired back to the queue, and a restarted consumer with the same
  id takes its own back at once;
* retries wait in a sorted set scored by due time and are moved back by whichever consumer looks
  first; retry and dead-letter copies replace the original in one ``MULTI`` transaction.

The queue is the list kombu and Celery producers ``LPUSH`` to, in kombu's JSON envelope, so
existing producers keep working. kombu's priority sub-queues are not read.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any

import redis
from redis import exceptions as redis_errors

from consumer_host.errors import BrokerUnavailable
from consumer_host.message import COPIED_PROPERTIES, Delivery
from consumer_host.redaction import redact_url

from .base import QueueSpec
from .redis_common import consumer_id, make_client, translated

_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, entry in ipairs(due) do
  redis.call('RPUSH', KEYS[2], entry)
  redis.call('ZREM', KEYS[1], entry)
end
return #due
"""

# KEYS: alive, processing, queue, consumers; ARGV: consumer id, "force"
_RECOVER = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'RIGHT') do moved = moved + 1 end
if ARGV[2] ~= 'force' then redis.call('SREM', KEYS[4], ARGV[1]) end
return moved
"""


class RedisListTransport:
    """One redis-py client per consumer instance, plus a keeper thread for the alive key."""

    delays_retries = True

    def __init__(
        self,
        url: str,
        spec: QueueSpec,
        *,
        instance: str,
        alive_ttl: float = 15.0,
        recover_interval: float = 5.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.spec = spec
        self.id = consumer_id(instance)
        self.alive_ttl = alive_ttl
        self.recover_interval = recover_interval
        self._connect_timeout = connect_timeout
        # A black-holed connection shows up as a read that never returns: this bounds it.
        self._socket_timeout = socket_timeout
        base = f"consumer-host:{spec.queue}"
        self.keys_consumers = f"{base}:consumers"
        self.keys_delayed = f"{base}:delayed"
        self.keys_processing = self.processing_key(self.id)
        self.keys_alive = self.alive_key(self.id)
        self._redis: redis.Redis | None = None
        self._ready = False
        self._consuming = False
        self._next_promotion = 0.0
        self._next_recovery = 0.0
        self._keeper_stop = threading.Event()

    def processing_key(self, consumer: str) -> str:
        return f"consumer-host:{self.spec.queue}:processing:{consumer}"

    def alive_key(self, consumer: str) -> str:
        return f"consumer-host:{self.spec.queue}:alive:{consumer}"

    # -- connection --------------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        self._ready = False
        with self._translated("connect to"):
            client = make_client(
                self.url, connect_timeout=self._connect_timeout, socket_timeout=self._socket_timeout
            )
            self._redis = client
            client.ping()
            self._promote = client.register_script(_PROMOTE_DUE)
            self._recover = client.register_script(_RECOVER)
            self._mark_alive(client)
            client.sadd(self.keys_consumers, self.id)
            # A previous run with this id (same pod, restarted) died holding these.
            self._recover(
                keys=[self.keys_alive, self.keys_processing, self.spec.queue, self.keys_consumers],
                args=[self.id, "force"],
            )
            self._ready = True
        self._keeper_stop = threading.Event()
        threading.Thread(
            target=self._keep_alive,
            args=(client, self._keeper_stop),
            name=f"alive:{self.id}",
            daemon=True,
        ).start()

    def _mark_alive(self, client: redis.Redis) -> None:
        client.set(self.keys_alive, "1", px=int(self.alive_ttl * 1000))

    def _keep_alive(self, client: redis.Redis, stop: threading.Event) -> None:
        while not stop.wait(self.alive_ttl / 3):
            try:
                self._mark_alive(client)
            except redis_errors.RedisError:
                continue  # the consumer thread sees the outage and reconnects

    def start_consuming(self) -> None:
        self._consuming = True

    def stop_consuming(self) -> None:
        self._consuming = False

    def discard(self) -> None:
        """Drop a broken connection; what we held comes back through recovery."""
        self._keeper_stop.set()
        client, self._redis = self._redis, None
        self._consuming = False
        if client is not None:
            client.close()

    def close(self) -> None:
        self._keeper_stop.set()
        client, self._redis = self._redis, None
        self._consuming = False
        if client is None:
            return
        if not self._ready:  # the connection failed before we held anything
            client.close()
            return
        try:
            # Whatever is still ours goes back at the head of the queue; then we are gone.
            self._recover(
                keys=[self.keys_alive, self.keys_processing, self.spec.queue, self.keys_consumers],
                args=[self.id, "force"],
            )
            client.srem(self.keys_consumers, self.id)
            client.delete(self.keys_alive)
        except redis_errors.RedisError:
            pass  # the alive key expires and another consumer recovers the list
        finally:
            client.close()

    # -- consuming ---------------------------------------------------------------------------------

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        client = self._client()
        with self._translated("read from"):
            self._maintain(client)
            if not self._consuming:
                return []
            raw = (
                client.blmove(self.spec.queue, self.keys_processing, timeout, "RIGHT", "LEFT")  # type: ignore[arg-type]
                if timeout > 0
                else client.lmove(self.spec.queue, self.keys_processing, "RIGHT", "LEFT")
            )
            if raw is None:
                return []
            batch = [raw]
            extra = min(self.spec.prefetch - 1, 100)
            if extra > 0:
                pipe = client.pipeline(transaction=False)
                for _ in range(extra):
                    pipe.lmove(self.spec.queue, self.keys_processing, "RIGHT", "LEFT")
                batch.extend(item for item in pipe.execute() if item is not None)
        return [self._delivery(_as_bytes(item)) for item in batch]

    def _maintain(self, client: redis.Redis) -> None:
        """Move due retries back (every 0.1 s), recover dead consumers' lists (every few s)."""
        now = time.monotonic()
        if now >= self._next_promotion:
            self._next_promotion = now + 0.1
            self._promote(keys=[self.keys_delayed, self.spec.queue], args=[time.time(), 500])
        if now < self._next_recovery:
            return
        self._next_recovery = now + self.recover_interval
        for member in client.smembers(self.keys_consumers):
            other = member.decode() if isinstance(member, bytes) else str(member)
            if other == self.id:
                continue
            self._recover(
                keys=[
                    self.alive_key(other),
                    self.processing_key(other),
                    self.spec.queue,
                    self.keys_consumers,
                ],
                args=[other, "if-dead"],
            )

    # -- settling ----------------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        with self._translated("ack on"):
            self._client().lrem(self.keys_processing, -1, delivery.handle)

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        copy = self._envelope(delivery, headers, self.spec.queue)
        with self._translated("retry on"):
            pipe = self._client().pipeline(transaction=True)
            pipe.zadd(self.keys_delayed, {copy: time.time() + delay})
            pipe.lrem(self.keys_processing, -1, delivery.handle)
            pipe.execute()

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        copy = self._envelope(delivery, headers, self.spec.dead_letter)
        with self._translated("dead-letter on"):
            pipe = self._client().pipeline(transaction=True)
            pipe.lpush(self.spec.dead_letter, copy)
            pipe.lrem(self.keys_processing, -1, delivery.handle)
            pipe.execute()

    def requeue(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        with self._translated("requeue on"):
            pipe = self._client().pipeline(transaction=True)
            for delivery in reversed(deliveries):  # the first fetched is consumed first again
                pipe.lrem(self.keys_processing, -1, delivery.handle)
                pipe.rpush(self.spec.queue, delivery.handle)
            pipe.execute()

    def depth(self) -> dict[str, int]:
        client = self._client()
        with self._translated("inspect"):
            return {
                self.spec.queue: int(client.llen(self.spec.queue)),
                self.spec.dead_letter: int(client.llen(self.spec.dead_letter)),
            }

    # -- the kombu envelope ------------------------------------------------------------------------

    def _delivery(self, raw: bytes) -> Delivery:
        try:
            envelope = json.loads(raw)
            properties = envelope.get("properties") or {}
            body = envelope["body"]
            if properties.get("body_encoding") == "base64":
                body = base64.b64decode(body, validate=True)
            elif isinstance(body, str):
                body = body.encode(envelope.get("content-encoding") or "utf-8")
            headers = envelope.get("headers") or {}
            if not isinstance(headers, dict) or not isinstance(body, bytes):
                raise TypeError("headers must be an object and body a string")
            return Delivery(
                body=body,
                content_type=envelope.get("content-type"),
                content_encoding=envelope.get("content-encoding"),
                headers=headers,
                properties=properties if isinstance(properties, dict) else {},
                delivery_info=properties.get("delivery_info") or {},
                handle=raw,
            )
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            # Not a kombu envelope: hand over the raw bytes, which decoding then dead-letters.
            return Delivery(
                body=raw,
                content_type=None,
                content_encoding=None,
                headers={},
                properties={},
                delivery_info={},
                handle=raw,
            )

    @staticmethod
    def _envelope(delivery: Delivery, headers: dict[str, Any], routing_key: str) -> str:
        properties = {
            k: delivery.properties[k]
            for k in COPIED_PROPERTIES
            if delivery.properties.get(k) is not None
        }
        properties.update(
            delivery_mode=2,
            delivery_info={"exchange": "", "routing_key": routing_key},
            priority=properties.get("priority", 0),
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        return json.dumps(
            {
                "body": base64.b64encode(delivery.body).decode("ascii"),
                "content-encoding": delivery.content_encoding or "binary",
                "content-type": delivery.content_type or "application/data",
                "headers": headers,
                "properties": properties,
            },
            default=str,
        )

    # -- errors ------------------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        if self._redis is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}")
        return self._redis

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return translated(action, self.url, self.spec.queue)


def _as_bytes(item: bytes | str) -> bytes:
    return item if isinstance(item, bytes) else item.encode("utf-8")
