"""What the host reads of a consumer instance: connection, counters, in-flight jobs, stuck
time, readiness and its ``/status`` view (the loop itself is in :mod:`.consumer`)."""

from __future__ import annotations

import threading
from typing import Any

from consumer_host.clock import Clock
from consumer_host.transports.base import Transport

from .connection import BrokerLink
from .executors import Executor
from .hand import Hand
from .handling import Job
from .killswitch import KillSwitchState
from .options import ConsumerOptions
from .settlement import Settlement
from .status import consumer_status
from .watchdog import stuck_jobs


class ConsumerReadings:
    """The read side of :class:`~.consumer.Consumer`, from any thread."""

    options: ConsumerOptions
    transport: Transport
    settlement: Settlement
    kill_switch: KillSwitchState | None
    consuming: bool
    last_progress: float
    stuck_after: float
    _link: BrokerLink
    _executor: Executor | None
    _hand: Hand
    _clock: Clock
    _paused: threading.Event

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def reconnects(self) -> int:
        return self._link.reconnects

    @property
    def counters(self) -> Any:
        return self.settlement.counters

    @property
    def acked(self) -> int:
        return self.settlement.counters.acked

    @property
    def in_flight(self) -> int:
        return len(self._running())

    def _running(self) -> list[Job]:
        return [] if self._executor is None else self._executor.running()

    @property
    def held_retries(self) -> int:
        """Retries held in process until due (virtual brokers, and failed messages waiting in
        their partition lane); a drain or a pause gives them back."""
        return len(self._hand.held) + len(self._hand.retries)

    def in_flight_ids(self) -> list[str]:
        """Message ids of the handlers running now (for shutdown and stuck reports)."""
        return [job.delivery.message_id or "?" for job in self._running()]

    def running_jobs(self) -> list[Job]:
        return self._running()

    @property
    def queue(self) -> str:
        return self.options.queue

    def status(self) -> dict[str, Any]:
        stuck = stuck_jobs(self._running(), self._clock.now(), self.stuck_after)
        return consumer_status(self, stuck)

    def stuck_for(self, now: float) -> float:
        """Seconds this consumer has been stuck: in its longest-running handler, or connected
        without looping. Waiting for a broker that is down, or paused, is not being stuck."""
        started = [job.started for job in self._running() if job.started is not None]
        if started:
            return now - min(started)
        if self.connected and not self.paused:
            return now - self.last_progress
        return 0.0

    @property
    def ready(self) -> bool:
        """Connected, and consuming unless intake was closed on purpose (paused, kill switch)."""
        switched_off = self.kill_switch is not None and self.kill_switch.state != "closed"
        return self.connected and (self.consuming or self.paused or switched_off)

    @property
    def paused(self) -> bool:
        return self._paused.is_set()
