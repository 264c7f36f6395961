"""Consumers on Redis lists that lose nothing, compatible with kombu and Celery producers.

kombu's own Redis transport fetches with BRPOP, which removes a message before it is recorded as
unacked: a kill or a reset at the wrong moment loses it, and a killed consumer's unacked
messages stay hidden for the visibility timeout (an hour). Here a fetch is one atomic
``BLMOVE queue -> processing list`` (the reliable-queue pattern of Sidekiq's super_fetch):

* the message is always in exactly one Redis list; an ack is ``LREM`` from the processing list,
  batched (before the next fetch, within 50 ms, before a copy, a requeue or a recovery: see
  :mod:`.redis_list_acks`);
* every consumer is registered in a set and has an ``alive`` key it refreshes from a keeper
  thread (so a long handler does not look dead). A sweep, run now and then by every consumer,
  moves the processing lists of consumers whose ``alive`` key expired back to the queue, counts a
  delivery in each message it moves (see :mod:`.redis_scripts`), and unregisters them. A
  consumer that was only stalled (a GC pause, SIGSTOP, a frozen VM) and comes back registers
  again before it fetches; what the sweep took from it is no longer in its processing list, so
  its settlements of those messages change nothing and the recovered originals are handled again;
* retry and dead-letter copies replace the original in one script that checks key types and
  ownership before writing anything: a copy is made with the original removed, or nothing is;
* retries wait in a sorted set scored by due time and are moved back by whichever consumer looks
  first, when the earliest is due.

The queue is the list kombu and Celery producers ``LPUSH`` to, in kombu's JSON envelope, so
existing producers keep working (``redis_producers.RedisListProducer`` writes the same).
kombu's priority sub-queues are not read.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

import redis
from redis import exceptions as redis_errors

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable
from consumer_host.message import Delivery
from consumer_host.redaction import redact_url

from . import redis_scripts as scripts
from .base import IDLE_WAIT, QueueSpec, Transport
from .redis_chores import shared_cadence
from .redis_clients import serving_node
from .redis_common import (
    consumer_id,
    make_client,
    translated,
)
from .redis_envelope import read_envelope
from .redis_keys import cluster_spec, own_prefix
from .redis_list_acks import ListAcks
from .redis_list_settling import ListSettling, as_bytes
from .redis_producers import RedisListProducer
from .redis_urls import parse_redis_url
from .redis_wake import BlockingReader, open_reader
from .suspects import SlowStart

__all__ = ["RedisListProducer", "RedisListTransport"]

#: Due retries are looked for at least this often, in case another consumer that scheduled an
#: earlier one died before moving it (once per queue per process: see redis_chores).
_PROMOTE_AT_LEAST_EVERY = IDLE_WAIT


class RedisListTransport(ListSettling, Transport):
    """One redis-py client per consumer instance, plus a keeper thread for the alive key."""

    delays_retries = True

    def __init__(
        self,
        url: str,
        spec: QueueSpec,
        *,
        instance: str,
        alive_ttl: float = 15.0,
        recover_interval: float = 10.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.url = url
        self.spec = cluster_spec(url, spec)
        self.id = consumer_id(instance)
        self.instance = instance
        self.alive_ttl = alive_ttl
        self.recover_interval = recover_interval
        self._connect_timeout = connect_timeout
        # A black-holed connection shows up as a read that never returns: this bounds it.
        self._socket_timeout = socket_timeout
        self._clock = clock
        self.keys_prefix = own_prefix(url, spec.queue)
        self.keys_consumers = f"{self.keys_prefix}consumers"
        self.keys_delayed = f"{self.keys_prefix}delayed"
        self.keys_processing = self.processing_key(self.id)
        self.keys_alive = self.alive_key(self.id)
        self.presumed_dead = 0
        """How often this consumer came back from a stall to find it had been swept."""
        self._redis: redis.Redis | None = None
        self.node: str | None = None
        """The primary serving the queue (Sentinel, cluster), for ``/status``; else ``None``."""
        self._reader: BlockingReader | None = None  # blocking reads, on their own connection
        # A woken read needs a known CLIENT ID on one node: Sentinel and cluster reads poll,
        # as do reads where the server refuses CLIENT ID or UNBLOCK (see redis_wake).
        self._wakeable = parse_redis_url(url).topology == "single"
        self.can_wake = self._wakeable
        self._ready = False
        self._connected_before = False
        self._consuming = False
        self._slow = SlowStart(spec.prefetch, clock)
        self._acks = ListAcks(self.keys_processing, clock)
        queue = spec.queue  # one per queue per process, see redis_chores
        self._promotion = shared_cadence(clock, url, f"promote:{queue}", _PROMOTE_AT_LEAST_EVERY)
        self._sweep = shared_cadence(clock, url, f"sweep:{queue}", recover_interval)
        self._registered_at = clock.now()
        self._keeper_stop = threading.Event()
        self._idle = threading.Event()  # never set: a wait on it only times out

    def processing_key(self, consumer: str) -> str:
        return f"{self.keys_prefix}processing:{consumer}"

    def alive_key(self, consumer: str) -> str:
        return f"{self.keys_prefix}alive:{consumer}"

    # -- connection --------------------------------------------------------------------------------

    def connect(self) -> None:
        self.close()
        self._ready = False
        self._slow.forget()
        with self._translated("connect to"):
            client = make_client(
                self.url,
                connect_timeout=self._connect_timeout,
                socket_timeout=self._socket_timeout,
                instance=self.instance,
            )
            self._redis = client
            client.ping()
            self._register_script = client.register_script(scripts.LIST_REGISTER)
            self._recover_own = client.register_script(scripts.LIST_RECOVER_OWN)
            self._sweep_script = client.register_script(scripts.LIST_SWEEP)
            self._settle_copy = client.register_script(scripts.LIST_SETTLE_COPY)
            self._requeue = client.register_script(scripts.LIST_REQUEUE)
            self._promote = client.register_script(scripts.LIST_PROMOTE_DUE)
            self._register(client)
            # Acks a dropped connection kept go first: recovery would give their messages back.
            self._acks.start(client, f"acks:{self.id}")
            self._acks.flush()
            # What our processing list holds goes back to the queue: on a reconnect, what this
            # process fetched before the link broke, which says nothing about the messages (no
            # count). The id is new at each process start (consumer_id), so on the first
            # connect the list is empty: a previous process's list, restarted pod or not, is the
            # sweep's once its alive key expires, never taken by a live namesake.
            mode = "as-is" if self._connected_before else "count"
            self._recover_own(keys=[self.keys_processing, self.spec.queue], args=[mode])
            self._connected_before = True
            self._reader = (
                open_reader(
                    self.url,
                    connect_timeout=self._connect_timeout,
                    socket_timeout=self._socket_timeout,
                    instance=self.instance,
                )
                if self._wakeable
                else None
            )
            self.can_wake = self._reader is not None
            self.node = serving_node(client, self.url, self.spec.queue)
            self._ready = True
        self._keeper_stop = threading.Event()
        threading.Thread(
            target=self._keep_alive,
            args=(client, self._keeper_stop),
            name=f"alive:{self.id}",
            daemon=True,
        ).start()

    def _register(self, client: redis.Redis) -> bool:
        """Refresh our alive key and membership; ``False`` if a sweep had presumed us dead."""
        member = self._register_script(
            keys=[self.keys_alive, self.keys_consumers],
            args=[self.id, max(1, int(self.alive_ttl * 1000))],
            client=client,
        )
        self._registered_at = self._clock.now()
        return bool(member)

    def _keep_alive(self, client: redis.Redis, stop: threading.Event) -> None:
        while not self._clock.wait(stop, self.alive_ttl / 3):
            try:
                if not self._register(client):
                    self.presumed_dead += 1
            except redis_errors.RedisError:
                continue  # the consumer thread sees the outage and reconnects

    def _register_if_stalled(self, client: redis.Redis) -> None:
        """After a stall long enough for our alive key to lapse, register before fetching:
        a fetch into a processing list nobody sweeps any more would strand its messages."""
        if self._clock.now() - self._registered_at > self.alive_ttl / 2 and not self._register(
            client
        ):
            self.presumed_dead += 1

    def start_consuming(self) -> None:
        self._consuming = True
        self._slow.restart()

    def stop_consuming(self) -> None:
        self._consuming = False
        if self._redis is not None:
            with self._translated("ack on"):
                self._acks.flush()

    def wake(self) -> None:
        """End an idle read now (a stop or a pause is waiting); from any thread."""
        if (reader := self._reader) is not None:
            reader.wake()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def discard(self) -> None:
        """Drop a broken connection; what we held comes back through recovery (finished
        messages' acks are kept: the next connection sends them first)."""
        self._keeper_stop.set()
        self._acks.stop()
        self._close_reader()
        client, self._redis = self._redis, None
        self.node = None
        self._consuming = False
        self._slow.forget()
        if client is not None:
            client.close()

    def close(self) -> None:
        self._keeper_stop.set()
        self._acks.stop()
        self._close_reader()
        client, self._redis = self._redis, None
        self.node = None
        self._consuming = False
        self._slow.forget()
        if client is None:
            return
        if not self._ready:  # the connection failed before we held anything
            client.close()
            return
        try:
            self._acks.flush()  # a failed ack skips the recovery: it would give back done work
            # Whatever is still ours goes back at the head of the queue, unstarted (not
            # counted); then we are gone.
            self._recover_own(
                keys=[self.keys_processing, self.spec.queue], args=["as-is"], client=client
            )
            client.srem(self.keys_consumers, self.id)
            client.delete(self.keys_alive)
        except redis_errors.RedisError:
            pass  # the alive key expires and another consumer recovers the list
        finally:
            client.close()

    # -- consuming ---------------------------------------------------------------------------------

    def watch(self) -> None:
        """Paused: the connection still answers (see consuming/paused_watch)."""
        with self._translated("ping"):
            self._client().ping()
            self._acks.flush()

    def fetch(self, timeout: float, limit: int = 1_000) -> list[Delivery]:
        client = self._client()
        with self._translated("read from"):
            self._acks.flush()  # before anything moves into the processing list
            self._register_if_stalled(client)
            self._maintain(client)
            if not self._consuming:
                return []
            allowed = self._slow.allowance(limit)
            if allowed == 0:
                # Slow start: nothing more until the first delivery is settled, which only
                # this thread can do; wait as a read that found nothing would.
                self._clock.wait(self._idle, timeout)
                return []
            reader = self._reader
            timeout = min(
                timeout, self._promotion.remaining(), reader.longest if reader else timeout
            )
            if timeout > 0 and reader is not None and reader.woken():
                return []
            source, target = self.spec.queue, self.keys_processing
            blocking = client if reader is None else reader.client  # no reader on a cluster
            raw = (
                blocking.blmove(source, target, timeout, "RIGHT", "LEFT")  # type: ignore[arg-type]
                if timeout > 0
                else client.lmove(source, target, "RIGHT", "LEFT")
            )
            if raw is None:
                return []
            batch = [raw]
            if allowed > 1:
                pipe = client.pipeline(transaction=False)
                for _ in range(min(allowed - 1, 100)):
                    pipe.lmove(self.spec.queue, self.keys_processing, "RIGHT", "LEFT")
                batch.extend(item for item in pipe.execute() if item is not None)
        deliveries = [read_envelope(as_bytes(item)) for item in batch]
        for delivery in deliveries:
            self._slow.handed_out(delivery.handle, delivery)
        return deliveries

    def _maintain(self, client: redis.Redis) -> None:
        """Move due retries back when the earliest is due; sweep dead consumers now and then."""
        if self._promotion.due():
            next_due = self._promote(
                keys=[self.keys_delayed, self.spec.queue], args=[self._clock.wall(), 500]
            )
            if next_due is not None:
                self._promotion.at(self._clock.now() + float(next_due) - self._clock.wall())
        if self._sweep.due():
            self._sweep_script(
                keys=[self.keys_consumers, self.spec.queue], args=[self.keys_prefix, self.id]
            )

    def depth(self) -> dict[str, int]:
        client = self._client()
        with self._translated("inspect"):
            return {
                self.spec.queue: int(client.llen(self.spec.queue)),
                self.spec.dead_letter: int(client.llen(self.spec.dead_letter)),
            }

    # -- errors ------------------------------------------------------------------------------------

    def _client(self) -> redis.Redis:
        if self._redis is None:
            raise BrokerUnavailable(f"not connected to {redact_url(self.url)}")
        return self._redis

    def _translated(self, action: str) -> AbstractContextManager[None]:
        return translated(action, self.url, self.spec.queue)
