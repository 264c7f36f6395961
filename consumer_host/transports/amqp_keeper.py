"""The keeper: a thread beside an AMQP connection's owner that sends heartbeats and due acks.

While the owner thread sits in a handler, nothing reads or writes the connection: without the
keeper RabbitMQ would miss heartbeats and finished messages would wait for the next fetch. It
only ever *sends* (heartbeat frames, coalesced acks), under the owner's I/O lock, and never
waits for that lock: when the owner holds it, the owner sends them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from consumer_host.clock import Clock

from .amqp_acks import AckLedger


class Keeper:
    """Sends heartbeats every ``heartbeat / 3`` s and acks once they are ``max_ack_delay`` old."""

    def __init__(
        self,
        name: str,
        *,
        heartbeat: float,
        max_ack_delay: float,
        clock: Clock,
        ledger: AckLedger,
        io: threading.Lock,
        flush_acks: Callable[[], None],
        send_heartbeat: Callable[[], None],
    ) -> None:
        self._heartbeat = heartbeat
        self._max_ack_delay = max_ack_delay
        self._clock = clock
        self._ledger = ledger
        self._io = io
        self._flush_acks = flush_acks
        self._send_heartbeat = send_heartbeat
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._idle = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudge.set()

    def ack_recorded(self) -> None:
        """A first finished ack while the keeper sleeps towards a heartbeat: wake it to time
        the ack's deadline."""
        if self._idle:
            self._idle = False
            self._nudge.set()

    def _run(self) -> None:
        # With heartbeats off (heartbeat=0) the keeper still sends due acks.
        beat = max(0.5, self._heartbeat / 3) if self._heartbeat else 3600.0
        clock, ledger, stop = self._clock, self._ledger, self._stop
        next_beat = clock.now() + beat
        while not stop.is_set():
            # Idle first, then look: an ack recorded in between nudges us (see ack_recorded).
            self._idle = True
            since = ledger.first_finished_at
            wake = next_beat if since is None else min(next_beat, since + self._max_ack_delay)
            if since is not None:
                self._idle = False
            clock.wait(self._nudge, wake - clock.now())
            self._nudge.clear()
            now = clock.now()
            since = ledger.first_finished_at
            acks_due = since is not None and now >= since + self._max_ack_delay
            beat_due = now >= next_beat
            if stop.is_set() or not (acks_due or beat_due):
                continue
            if not self._io.acquire(blocking=False):
                # The owner thread is using the connection: it sends both itself. Look again
                # soon in case it is publishing a copy rather than fetching.
                next_beat = now + beat if beat_due else next_beat
                clock.wait(stop, self._max_ack_delay / 5)
                continue
            try:
                if acks_due:
                    self._flush_acks()
                if beat_due and self._heartbeat:
                    self._send_heartbeat()
            except Exception:  # noqa: BLE001, S110 - the owner thread will see the failure
                pass
            finally:
                self._io.release()
            if beat_due:
                next_beat = now + beat
