"""Consumers on Redis Streams: consumer groups, batched acks, crash recovery by XAUTOCLAIM.

Each queue is a stream, each ``@host.consumer`` a consumer group (the queue name unless
``group=`` says otherwise), each pool instance a named consumer ``<instance>@<host>-<pid>``.

* Reading: ``XREADGROUP ... COUNT prefetch BLOCK`` a short poll, so a stop is prompt.
* Acks: collected while a batch is handled and sent as one ``XACK`` before the next read, or on
  drain (ack coalescing); a crash between can only redeliver.
* Crash recovery: every ``claim_after`` / 4 each instance runs ``XAUTOCLAIM`` for entries idle
  longer than ``claim_after`` (default 60 s; it must exceed your longest handler, or a slow
  handler's message is handed to a second consumer). So a killed consumer's messages are handled
  by the survivors, or by the restarted host, within about ``claim_after``. Consumers of the
  group that own nothing and have been idle for twice ``claim_after`` are removed.
* Poison: the delivery count from the pending entries list is the attempt; an entry delivered
  more than ``max_retries + 1`` times without an ack (a handler that kills the process) is
  dead-lettered by the consumer instead of crashing the host for ever.
* Retries wait in a sorted set and are added back to the stream when due; dead letters go to the
  stream ``<queue>.dlq``; both replace the original in one ``MULTI`` transaction.
* Growth: after acks, ``XTRIM MINID ~`` to the oldest entry any group still needs (its oldest
  pending entry, or the next one it has not read), so an unacked entry is never trimmed.

Entry fields: ``body``, ``content-type``, ``content-encoding``, ``headers`` (JSON),
``message_id``.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import AbstractContextManager, suppress
from typing import Any

import redis
from redis import exceptions as redis_errors

from consumer_host.errors import BrokerUnavailable
from consumer_host.message import Delivery

from .base import Place, QueueSpec
from .redis_common import consumer_id, make_client, translated

# KEYS: delayed set, stream; ARGV: now, limit. Each member names a hash holding the entry's
# fields (binary-safe), which goes back onto the stream as a new entry.
_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(due) do
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then redis.call('XADD', KEYS[2], '*', unpack(fields)) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], key)
end
return #due
"""


def plain_url(url: str) -> str:
    """``redis+streams://h:6379/0`` -> ``redis://h:6379/0`` (and ``rediss+streams`` -> TLS)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.replace('+streams', '')}{sep}{rest}"


def entry_fields(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, Any],
    message_id: str | None,
) -> dict[Any, Any]:
    """The fields of one stream entry, as producers (and ``consumer-host publish``) write them."""
    fields: dict[Any, Any] = {
        "body": body,
        "content-type": content_type or "",
        "content-encoding": content_encoding or "",
        "headers": json.dumps(headers, default=str),
    }
    if message_id:
        fields["message_id"] = message_id
    return fields


class RedisStreamsTransport:
    """One redis-py client per consumer instance, owned by its thread."""

    delays_retries = True

    def __init__(
        self,
        url: str,
        spec: QueueSpec,
        *,
        instance: str,
        group: str | None = None,
        claim_after: float = 60.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.spec = spec
        self.group = group or spec.queue
        self.consumer = consumer_id(instance)
        self.claim_after = claim_after
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self.keys_delayed = f"consumer-host:{spec.queue}:delayed"
        self._redis: redis.Redis | None = None
        self._consuming = False
        self._to_ack: list[bytes] = []
        self._next_claim = 0.0
        self._next_trim = 0.0
        self._next_promotion = 0.0
        self._claim_cursor = "0-0"

    # -- connection -------------------------------------------------------------------------------

    def connect(self) -> None:
        self.discard()
        with self._translated("connect to"):
            client = make_client(
                plain_url(self.url),
                connect_timeout=self._connect_timeout,
                socket_timeout=self._socket_timeout,
            )
            self._redis = client
            self._ensure_group(client, self.spec.queue, self.group)
            self._promote = client.register_script(_PROMOTE_DUE)
        self._next_claim = 0.0

    @staticmethod
    def _ensure_group(client: redis.Redis, stream: str, group: str) -> None:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start_consuming(self) -> None:
        self._consuming = True

    def stop_consuming(self) -> None:
        self._consuming = False
        if self._redis is not None:
            with self._translated("ack on"):
                self._flush_acks(self._redis)

    def close(self) -> None:
        client = self._redis
        if client is not None:
            with suppress(redis_errors.RedisError):  # unacked entries are claimed again later
                self._flush_acks(client)
                # Leave the group if we own nothing: deleting a consumer drops its pending
                # entries, so one that still holds some stays until they are claimed.
                mine = client.xpending_range(
                    self.spec.queue,
                    self.group,
                    min="-",
                    max="+",
                    count=1,
                    consumername=self.consumer,
                )
                if not mine:
                    client.xgroup_delconsumer(self.spec.queue, self.group, self.consumer)
        self.discard()

    def discard(self) -> None:
        client, self._redis = self._redis, None
        self._consuming = False
        self._to_ack = []
        if client is not None:
            client.close()

    # -- consuming --------------------------------------------------------------------------------

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        client = self._client()
        with self._translated("read from"):
            self._flush_acks(client)
            self._maintain(client)
            if not self._consuming:
                return []
            claimed = self._claim(client)
            if claimed:
                return claimed
            reply: Any = client.xreadgroup(
                self.group,
                self.consumer,
                {self.spec.queue: ">"},
                count=self.spec.prefetch,
                block=max(1, int(timeout * 1000)) if timeout else None,
            )
        deliveries = []
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                deliveries.append(self._delivery(entry_id, fields, delivered=1))
        return deliveries

    def _claim(self, client: redis.Redis) -> list[Delivery]:
        """Take over entries other consumers (dead ones) have held too long."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + max(0.5, self.claim_after / 4)
        cursor, entries, *_ = client.xautoclaim(
            self.spec.queue,
            self.group,
            self.consumer,
            int(self.claim_after * 1000),
            start_id=self._claim_cursor,
            count=self.spec.prefetch,
        )
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor != "0-0":
            self._next_claim = now  # more to claim: come back on the next fetch
        if not entries:
            return []
        counts = {
            item["message_id"]: item["times_delivered"]
            for item in client.xpending_range(
                self.spec.queue,
                self.group,
                min=entries[0][0],
                max=entries[-1][0],
                count=len(entries),
                consumername=self.consumer,
            )
        }
        return [
            self._delivery(entry_id, fields, delivered=int(counts.get(entry_id, 2)))
            for entry_id, fields in entries
            if fields
        ]

    def _maintain(self, client: redis.Redis) -> None:
        now = time.monotonic()
        if now >= self._next_promotion:
            self._next_promotion = now + 0.1
            self._promote(keys=[self.keys_delayed, self.spec.queue], args=[time.time(), 500])
        if now >= self._next_trim:
            self._next_trim = now + 5.0
            self._trim(client)
            self._forget_stale_consumers(client)

    def _trim(self, client: redis.Redis) -> None:
        """Drop entries no group needs any more: never one that is pending or unread."""
        floor: str | None = None
        for group in client.xinfo_groups(self.spec.queue):
            needed = None
            if group["pending"]:
                # Another consumer may ack in between, leaving no oldest pending entry.
                needed = client.xpending(self.spec.queue, group["name"])["min"]
            if needed is None:
                needed = _next_id(group["last-delivered-id"])
            text = needed.decode() if isinstance(needed, bytes) else str(needed)
            if floor is None or _id_key(text) < _id_key(floor):
                floor = text
        if floor is not None:
            client.xtrim(self.spec.queue, minid=floor, approximate=True)

    def _forget_stale_consumers(self, client: redis.Redis) -> None:
        for info in client.xinfo_consumers(self.spec.queue, self.group):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if (
                name != self.consumer
                and info["pending"] == 0
                and info["idle"] > self.claim_after * 2000
            ):
                client.xgroup_delconsumer(self.spec.queue, self.group, name)

    # -- settling ---------------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> None:
        self._to_ack.append(delivery.handle)

    def _flush_acks(self, client: redis.Redis) -> None:
        if self._to_ack:
            ids, self._to_ack = self._to_ack, []
            client.xack(self.spec.queue, self.group, *ids)

    def retry(self, delivery: Delivery, headers: dict[str, Any], delay: float) -> None:
        held = f"consumer-host:{self.spec.queue}:retry:{uuid.uuid4().hex}"
        with self._translated("retry on"):
            pipe = self._client().pipeline(transaction=True)
            pipe.hset(held, mapping=self._fields(delivery, headers))
            pipe.zadd(self.keys_delayed, {held: time.time() + delay})
            pipe.xack(self.spec.queue, self.group, delivery.handle)
            pipe.execute()

    def dead_letter(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        with self._translated("dead-letter on"):
            pipe = self._client().pipeline(transaction=True)
            pipe.xadd(self.spec.dead_letter, self._fields(delivery, headers))
            pipe.xack(self.spec.queue, self.group, delivery.handle)
            pipe.execute()

    def requeue(self, deliveries: list[Delivery]) -> None:
        """A stream cannot un-read: put copies at the end and ack the originals, atomically."""
        if not deliveries:
            return
        with self._translated("requeue on"):
            pipe = self._client().pipeline(transaction=True)
            for delivery in deliveries:
                pipe.xadd(self.spec.queue, self._fields(delivery, delivery.headers))
                pipe.xack(self.spec.queue, self.group, delivery.handle)
            pipe.execute()

    def depth(self) -> dict[str, int]:
        client = self._client()
        with self._translated("inspect"):
            groups = {g["name"]: g for g in client.xinfo_groups(self.spec.queue)}
            group = groups.get(self.group.encode()) or groups.get(self.group) or {}
            return {
                self.spec.queue: int(client.xlen(self.spec.queue)),
                f"{self.spec.queue} (unread by {self.group})": int(group.get("lag") or 0),
                f"{self.spec.queue} (pending in {self.group})": int(group.get("pending") or 0),
                f"{self.spec.queue} (consumers of {self.group})": int(group.get("consumers") or 0),
                self.spec.dead_letter: int(client.xlen(self.spec.dead_letter)),
            }

    # -- entries ----------------------------------------------------------------------------------

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], *, delivered: int) -> Delivery:
        headers: Any = {}
        raw_headers = fields.get(b"headers")
        if raw_headers:
            try:
                headers = json.loads(raw_headers)
            except ValueError:
                headers = {}
        if not isinstance(headers, dict):
            headers = {}
        message_id = fields.get(b"message_id")
        return Delivery(
            body=fields.get(b"body", b""),
            content_type=(fields.get(b"content-type") or b"").decode("latin-1") or None,
            content_encoding=(fields.get(b"content-encoding") or b"").decode("latin-1") or None,
            headers=headers,
            properties={"message_id": message_id.decode("latin-1")} if message_id else {},
            delivery_info={
                "stream": self.spec.queue,
                "group": self.group,
                "entry_id": entry_id.decode(),
            },
            redelivered=delivered > 1,
            delivery_count=delivered,
            handle=entry_id,
        )

    @staticmethod
    def _fields(delivery: Delivery, headers: dict[str, Any]) -> dict[Any, Any]:
        return entry_fields(
            delivery.body,
            delivery.content_type,
            delivery.content_encoding,
            headers,
            delivery.message_id or str(uuid.uuid4()),
        )

    # -- errors -----------------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        if self._redis is None:
            raise BrokerUnavailable(f"not connected to {Place('use', self.url, self.spec.queue)}")
        return self._redis

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return translated(action, self.url, self.spec.queue)


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _next_id(entry_id: bytes | str) -> str:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    millis, seq = _id_key(text)
    return f"{millis}-{seq + 1}"
