"""Consumers on Redis Streams: consumer groups, batched acks, crash recovery by XAUTOCLAIM.

Each queue is a stream, each ``@host.consumer`` a consumer group (the queue name unless
``group=`` says otherwise), each pool instance a named consumer
``<instance>@<host>-<pid>-<token>``, new at each process start (``redis_common.consumer_id``).

* Reading: ``XREADGROUP ... COUNT n BLOCK`` the fetch timeout; ``n`` is 1 after
  ``start_consuming`` until the first settle (slow start), then up to the prefetch.
* Acks: collected and sent as one ``XACK`` before the next read, or once the oldest waited
  50 ms, or on drain; a crash between can only redeliver (:mod:`.redis_stream_acks`).
* Crash recovery: every ``claim_after`` / 4 (jittered) each instance runs ``XAUTOCLAIM`` for
  entries idle longer than ``claim_after`` (default 60 s; it must exceed your longest handler,
  or a slow handler's message is handed to a second consumer). It claims **one entry at a time**
  and no other while a claimed one is unsettled: claiming counts a delivery, so only the entry
  that was in the handler when a process died keeps counting up; its batch-mates do not.
  Consumers of the group that own nothing and have been idle for twice ``claim_after`` are
  removed.
* Poison: the delivery count from the pending entries list is ``Delivery.delivery_count``; the
  consumer dead-letters an entry delivered too often without a settle.
* Retries wait in a sorted set and are added back to the stream when the earliest is due; dead
  letters go to the stream ``<queue>.dlq``. Both copies replace the original in one script that
  checks key types and that the entry is still pending on us before writing anything.
* Growth: after acks, ``XTRIM MINID ~`` to the oldest entry any group still needs (its oldest
  pending entry, or the next one it has not read), so an unacked entry is never trimmed.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, suppress
from typing import Any

import redis
from redis import exceptions as redis_errors

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable
from consumer_host.message import Delivery

from . import redis_scripts as scripts
from .base import IDLE_WAIT, Place, QueueSpec, Transport
from .redis_chores import shared_cadence
from .redis_clients import serving_node
from .redis_common import (
    Cadence,
    consumer_id,
    make_client,
    text,
    translated,
)
from .redis_keys import cluster_spec, own_prefix
from .redis_producers import StreamsProducer
from .redis_stream_acks import StreamAcks
from .redis_stream_entries import entry_fields, plain_url, read_entry
from .redis_stream_settling import StreamSettling
from .redis_stream_upkeep import forget_stale_consumers, trim
from .redis_urls import parse_redis_url
from .redis_wake import BlockingReader, open_reader
from .suspects import SlowStart

__all__ = ["RedisStreamsTransport", "StreamsProducer", "entry_fields", "plain_url"]

_PROMOTE_AT_LEAST_EVERY = IDLE_WAIT
_TRIM_EVERY = 10.0


class RedisStreamsTransport(StreamSettling, Transport):
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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = url
        self.spec = cluster_spec(url, spec)
        self.group = group or spec.queue
        self.consumer = consumer_id(instance)
        self.instance = instance
        self.claim_after = claim_after
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._clock = clock
        self.keys_prefix = own_prefix(url, spec.queue)
        self.keys_delayed = f"{self.keys_prefix}delayed"
        self._redis: redis.Redis | None = None
        self.node: str | None = None
        """The primary serving the stream (Sentinel, cluster), for ``/status``; else ``None``."""
        self._reader: BlockingReader | None = None  # blocking reads, on their own connection
        # A woken read needs a known CLIENT ID on one node: Sentinel and cluster reads poll,
        # as do reads where the server refuses CLIENT ID or UNBLOCK (see redis_wake).
        self._wakeable = parse_redis_url(url).topology == "single"
        self.can_wake = self._wakeable
        self._consuming = False
        self._acks = StreamAcks(spec.queue, self.group, clock)
        self._slow = SlowStart(spec.prefetch, clock)
        self._claimed: set[bytes] = set()
        self._claims = Cadence(clock, max(0.5, claim_after / 4))
        queue = f"{spec.queue}:{self.group}"  # one per queue per process, see redis_chores
        self._promotion = shared_cadence(clock, url, f"promote:{queue}", _PROMOTE_AT_LEAST_EVERY)
        self._trims = Cadence(clock, _TRIM_EVERY)
        self._forgets = shared_cadence(clock, url, f"forget:{queue}", _TRIM_EVERY)
        self._claim_cursor = "0-0"
        self._idle = threading.Event()  # never set: a wait on it only times out

    # -- connection -------------------------------------------------------------------------------

    def connect(self) -> None:
        self.discard()
        with self._translated("connect to"):
            client = make_client(
                plain_url(self.url),
                connect_timeout=self._connect_timeout,
                socket_timeout=self._socket_timeout,
                instance=self.instance,
            )
            self._redis = client
            self._ensure_group(client, self.spec.queue, self.group)
            self._promote = client.register_script(scripts.STREAM_PROMOTE_DUE)
            self._settle_copy = client.register_script(scripts.STREAM_SETTLE_COPY)
            self.node = serving_node(client, self.url, self.spec.queue)
            self._reader = (
                open_reader(
                    plain_url(self.url),
                    connect_timeout=self._connect_timeout,
                    socket_timeout=self._socket_timeout,
                    instance=self.instance,
                )
                if self._wakeable
                else None
            )
            self.can_wake = self._reader is not None
        self._claims.now()
        self._acks.start_flusher(client, f"acks:{self.consumer}")

    @staticmethod
    def _ensure_group(client: redis.Redis, stream: str, group: str) -> None:
        """Create the group (and the stream) unless it exists, from the stream's first entry.

        This also runs on every reconnect, which is how a consumer gets over NOGROUP (the group
        destroyed, the stream deleted: see redis_common.translated). A group recreated from
        id 0 reads every entry still in the stream again: entries the old group had acked but
        not yet trimmed are delivered a second time, and the old group's pending entries (its
        delivery counts too) are gone. Duplicates rather than losses: from ``$`` the entries
        added between the destroy and this create would never be read. A deleted stream comes
        back empty (MKSTREAM), with nothing to read twice."""
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def start_consuming(self) -> None:
        self._consuming = True
        self._slow.restart()

    def stop_consuming(self) -> None:
        self._consuming = False
        if self._redis is not None:
            with self._translated("ack on"):
                self._acks.flush(self._redis)

    def close(self) -> None:
        client = self._redis
        if client is not None:
            with suppress(redis_errors.RedisError):  # unacked entries are claimed again later
                self._acks.flush(client)
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

    def wake(self) -> None:
        """End an idle read now (a stop or a pause is waiting); from any thread."""
        if (reader := self._reader) is not None:
            reader.wake()

    def discard(self) -> None:
        self._acks.stop_flusher()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        client, self._redis = self._redis, None
        self.node = None
        self._consuming = False
        self._slow.forget()  # finished acks are kept: the next connection sends them
        self._claimed.clear()
        if client is not None:
            client.close()

    # -- consuming --------------------------------------------------------------------------------

    def watch(self) -> None:
        """Paused: the connection still answers (see consuming/paused_watch)."""
        with self._translated("ping"):
            self._client().ping()

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        client = self._client()
        with self._translated("read from"):
            self._acks.flush(client)
            self._maintain(client)
            if not self._consuming:
                return []
            allowed = self._slow.allowance(limit)
            if allowed == 0:
                # Slow start: nothing more until the first delivery is settled, which only
                # this thread can do; wait as a read that found nothing would.
                self._clock.wait(self._idle, timeout)
                return []
            claimed = self._claim(client)
            if claimed:
                return self._handed_out(claimed)
            reader = self._reader
            timeout = min(timeout, self._promotion.remaining(), self._claims.remaining())
            timeout = min(timeout, reader.longest) if reader else timeout
            if timeout and reader is not None and reader.woken():
                return []
            reply: Any = (reader.client if timeout and reader is not None else client).xreadgroup(
                self.group,
                self.consumer,
                {self.spec.queue: ">"},
                count=allowed,
                block=max(1, int(timeout * 1000)) if timeout else None,
            )
        deliveries = [
            self._read(entry_id, fields, delivered=1)
            for _stream, entries in reply or ()
            for entry_id, fields in entries
        ]
        return self._handed_out(deliveries)

    def _handed_out(self, deliveries: list[Delivery]) -> list[Delivery]:
        for delivery in deliveries:
            self._slow.handed_out(delivery.handle, delivery)
        return deliveries

    def _claim(self, client: redis.Redis) -> list[Delivery]:
        """Take over one entry another consumer (a dead one) has held too long."""
        if self._claimed or not self._claims.due():
            return []
        cursor, entries, *_ = client.xautoclaim(
            self.spec.queue,
            self.group,
            self.consumer,
            int(self.claim_after * 1000),
            start_id=self._claim_cursor,
            count=1,
        )
        self._claim_cursor = text(cursor)
        if self._claim_cursor != "0-0":
            self._claims.now()  # more to look at: come back once this one is settled
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]
        if not entries:
            return []
        entry_id, fields = entries[0]
        pending = client.xpending_range(
            self.spec.queue,
            self.group,
            min=entry_id,
            max=entry_id,
            count=1,
            consumername=self.consumer,
        )
        delivered = int(pending[0]["times_delivered"]) if pending else 2
        self._claimed.add(entry_id)
        return [self._read(entry_id, fields, delivered=delivered)]

    def _maintain(self, client: redis.Redis) -> None:
        if self._promotion.due():
            next_due = self._promote(
                keys=[self.keys_delayed, self.spec.queue], args=[self._clock.wall(), 500]
            )
            if next_due is not None:
                self._promotion.at(self._clock.now() + float(next_due) - self._clock.wall())
        if self._trims.due() and self._acks.sent:
            self._acks.sent = False
            self._trim(client)
        if self._forgets.due():
            forget_stale_consumers(
                client, self.spec.queue, self.group, keep=self.consumer, idle=self.claim_after * 2
            )

    def _trim(self, client: redis.Redis) -> None:
        trim(client, self.spec.queue)

    def depth(self) -> dict[str, int]:
        client = self._client()
        with self._translated("inspect"):
            groups = {text(g["name"]): g for g in client.xinfo_groups(self.spec.queue)}
            group = groups.get(self.group) or {}
            return {
                self.spec.queue: int(client.xlen(self.spec.queue)),
                f"{self.spec.queue} (unread by {self.group})": int(group.get("lag") or 0),
                f"{self.spec.queue} (pending in {self.group})": int(group.get("pending") or 0),
                f"{self.spec.queue} (consumers of {self.group})": int(group.get("consumers") or 0),
                self.spec.dead_letter: int(client.xlen(self.spec.dead_letter)),
            }

    # -- entries ----------------------------------------------------------------------------------

    def _read(self, entry_id: bytes, fields: dict[bytes, bytes], *, delivered: int) -> Delivery:
        return read_entry(
            entry_id, fields, stream=self.spec.queue, group=self.group, delivered=delivered
        )

    # -- errors -----------------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        if self._redis is None:
            raise BrokerUnavailable(f"not connected to {Place('use', self.url, self.spec.queue)}")
        return self._redis

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return translated(action, self.url, self.spec.queue)
