"""Stream acks, batched: one ``XACK`` before the next read, or once the oldest waited 50 ms.

A flusher thread sends a batch that has waited ``max_delay`` even while the connection thread
sits in a long handler (they share the batch under a lock). A crash in between can only
redeliver: an entry stays pending until its XACK.

Ids whose XACK failed (the connection dropped) are kept, across a reconnect, and sent on the
next connection: the consumer name is the same, so the entries are still pending under it.
Dropping them would leave finished entries pending until the idle claim (``claim_after``)
hands them out again, a duplicate each and a queue that looks busy meanwhile.
"""

from __future__ import annotations

import threading

import redis
from redis import exceptions as redis_errors

from consumer_host.clock import Clock

MAX_ACK_DELAY = 0.05


class StreamAcks:
    """The entry ids of one consumer finished but not yet acked."""

    def __init__(
        self, stream: str, group: str, clock: Clock, max_delay: float = MAX_ACK_DELAY
    ) -> None:
        self.stream = stream
        self.group = group
        self.sent = True
        """Set whenever entries were acked (the trim looks at it and clears it)."""
        self._clock = clock
        self._max_delay = max_delay
        self._ids: list[bytes] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._pending = threading.Event()
        self._flusher_stop = threading.Event()

    def add(self, entry_id: bytes) -> None:
        with self._lock:
            if not self._ids:
                self._oldest = self._clock.now()
                self._pending.set()
            self._ids.append(entry_id)

    def flush(self, client: redis.Redis) -> None:
        """Ack what is waiting, now (from the connection's owner thread)."""
        if self._ids:
            ids = self._take()
            if ids:
                try:
                    client.xack(self.stream, self.group, *ids)
                except BaseException:
                    self._restore(ids)
                    raise
                self.sent = True

    def _restore(self, ids: list[bytes]) -> None:
        """Put back ids whose XACK did not go through, ahead of any added since."""
        with self._lock:
            if not self._ids:
                self._oldest = self._clock.now()
            self._ids = ids + self._ids
            self._pending.set()

    def start_flusher(self, client: redis.Redis, name: str) -> None:
        self._flusher_stop = threading.Event()
        with self._lock:
            # stop_flusher() set it to wake the previous flusher; ids kept across a reconnect
            # (see _restore) are still pending for the new one.
            if not self._ids:
                self._pending.clear()
        threading.Thread(
            target=self._flush_when_due, args=(client, self._flusher_stop), name=name, daemon=True
        ).start()

    def stop_flusher(self) -> None:
        self._flusher_stop.set()
        self._pending.set()  # wake the flusher so it sees the stop

    def _take(self) -> list[bytes]:
        with self._lock:
            ids, self._ids = self._ids, []
            self._pending.clear()
        return ids

    def _flush_when_due(self, client: redis.Redis, stop: threading.Event) -> None:
        """Send a batch once it is ``max_delay`` old, whatever the owner does."""
        while not stop.is_set():
            self._pending.wait()
            wait = self._max_delay - (self._clock.now() - self._oldest)
            if stop.wait(max(wait, 0.001)) or not self._ids:
                continue
            if self._clock.now() - self._oldest < self._max_delay:
                continue
            ids = self._take()
            try:
                if ids:
                    client.xack(self.stream, self.group, *ids)
                    self.sent = True
            except redis_errors.RedisError:
                # The owner sees the outage and reconnects; the ids go out on the new link.
                self._restore(ids)
                stop.wait(self._max_delay)
