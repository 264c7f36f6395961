"""Heartbeats of the kombu transport's connection: the keeper thread that sends them (and
flushes due acks, see :mod:`.amqp_keeper`), and the consumer thread's check of what came in."""

from __future__ import annotations

import threading

from kombu.connection import Connection

from consumer_host.clock import Clock

from .amqp_acks import AckLedger
from .amqp_keeper import Keeper
from .base import QueueSpec


class KombuHeartbeats:
    """The heartbeat side of :class:`~.kombu_transport.KombuTransport`."""

    spec: QueueSpec
    _clock: Clock
    _conn: Connection | None
    _heartbeat: float
    _last_heartbeat_check: float
    _coalesce: bool
    _max_ack_delay: float
    _ledger: AckLedger
    _io: threading.Lock
    _keeper: Keeper | None

    def _flush_acks(self) -> None:
        raise NotImplementedError

    def _start_keeper(self) -> None:
        if self._heartbeat or self._coalesce:
            self._keeper = Keeper(
                f"heartbeat:{self.spec.queue}",
                heartbeat=self._heartbeat,
                max_ack_delay=self._max_ack_delay,
                clock=self._clock,
                ledger=self._ledger,
                io=self._io,
                flush_acks=self._flush_acks,
                send_heartbeat=self._send_heartbeat,
            )
            self._keeper.start()

    def _stop_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

    def _heartbeat_check(self, conn: Connection) -> None:
        if not self._heartbeat:
            return
        now = self._clock.now()
        # Often enough that a dead link is noticed within two heartbeats plus a fraction.
        if now - self._last_heartbeat_check >= min(1.0, self._heartbeat / 8):
            self._last_heartbeat_check = now
            conn.heartbeat_check()

    def _send_heartbeat(self) -> None:
        """From the keeper, under the I/O lock."""
        conn = self._conn
        if conn is not None and conn.connected:  # a lost one is the consumer thread's to see
            conn.connection.send_heartbeat()
