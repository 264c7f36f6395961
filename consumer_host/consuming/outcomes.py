"""Settling outcomes: a finished job (or a delivery judged without a handler) leaves the
queue through :class:`~.settlement.Settlement`; a copy the broker refused backs the loop off;
every handler outcome feeds the kill switch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from consumer_host.clock import Clock
from consumer_host.errors import CopyRefused, Defer, Reject
from consumer_host.message import Delivery
from consumer_host.supervision.backoff import Backoff

from .given_back import GivenBack
from .handling import Job
from .killswitch import KillSwitchState, SwitchState
from .settlement import Settlement

#: Handler outcomes that say nothing about a downstream (the kill switch ignores them).
NOT_DOWNSTREAM_FAILURES = (Reject, Defer)


class Outcomes:
    """Settles outcomes for one consumer, backing off after refused copies."""

    def __init__(
        self,
        settlement: Settlement,
        kill_switch: KillSwitchState | None,
        refusals: Backoff,
        *,
        given_back: GivenBack,
        clock: Clock,
        log: Any,
    ) -> None:
        self._settlement = settlement
        self._kill_switch = kill_switch
        self._refusals = refusals
        self._given_back = given_back
        self._clock = clock
        self._log = log
        self.stop = threading.Event()  # the loop's stop: a refusal's back-off ends with it

    def settle_one(self, job: Job) -> None:
        """Settle a finished job and let the kill switch see its outcome."""
        try:
            self._settlement.finish(job)
        except CopyRefused as refused:
            self._refused(job.delivery, refused)
        else:
            if self._refusals.attempt:
                self._refusals.reset()
        self._record(job)

    def wait_in_lane(self, job: Job, delay: float) -> None:
        """``job`` failed and waits in its partition lane for its retry (strict order): counted
        and logged as a retry, and seen by the kill switch like any outcome."""
        self._settlement.waits_in_place(job, delay)
        self._record(job)

    def _record(self, job: Job) -> None:
        switch = self._kill_switch
        if switch is not None:
            error = job.error
            failed = error is not None and not isinstance(error, NOT_DOWNSTREAM_FAILURES)
            changed = switch.record(failed)
            if changed is not None:
                self._switched(switch, changed)

    def _switched(self, switch: KillSwitchState, changed: SwitchState) -> None:
        if changed is SwitchState.OPEN:
            self._log.warning(
                "kill_switch_open",
                failure_ratio=round(switch.failure_ratio, 3),
                pause=round(switch.opens_for(), 3),
                detail="most messages fail: taking none for a while (they stay in the queue), "
                "then one as a probe",
            )
        elif changed is SwitchState.CLOSED:
            self._log.info("kill_switch_closed")

    def settled_by(
        self, settle: Callable[[Delivery, Any], None], delivery: Delivery, arg: Any
    ) -> None:
        """Run one settlement; a copy the broker refused leaves the original in the queue, and
        the loop backs off before it goes on with other messages."""
        try:
            settle(delivery, arg)
        except CopyRefused as refused:
            self._refused(delivery, refused)
        else:
            if self._refusals.attempt:
                self._refusals.reset()

    def _refused(self, delivery: Delivery, refused: CopyRefused) -> None:
        """The broker refused a copy: the original is back in the queue, given back unhandled
        (not a delivery that ``max_deliveries`` should count); back off, go on."""
        self._given_back.remember([delivery])
        self._settlement.counters.refused += 1
        delay = self._refusals.next()
        self._log.warning(
            "copy_refused", message_id=delivery.message_id, error=str(refused), delay=delay
        )
        self._clock.wait(self.stop, delay)
