"""Strict per-key order across retries (``partition_order="strict"``): which finished jobs stay
in their partition lane to wait for a retry, and running them again when it is due.

A retry through the broker comes back behind the key's later messages; here the failed message
stays unacked in hand (:class:`~.lane_retries.LaneRetries`), its key stays taken, and the key's
later messages wait behind it in the lane, while other keys go on."""

from __future__ import annotations

from .hand import Hand
from .handling import Job
from .judging import Judge
from .lane_retries import LONGEST_WAIT_IN_LANE
from .outcomes import Outcomes
from .settlement import Settlement


class StrictOrder:
    """Keeps retries in their lanes for one partitioned consumer."""

    def __init__(
        self, hand: Hand, settlement: Settlement, outcomes: Outcomes, judge: Judge
    ) -> None:
        self._hand = hand
        self._settlement = settlement
        self._outcomes = outcomes
        self._judge = judge

    def keep_retries(self, jobs: list[Job], generation: int) -> list[Job]:
        """A failed job that will be retried (or deferred) keeps its key and waits in hand,
        counted and logged as a retry; the rest leave, returned. Jobs from an older connection
        leave: the broker has them back."""
        leaving = []
        for job in jobs:
            current = job.generation == generation
            delay = self._settlement.in_place_delay(job) if current else None
            if delay is None or delay > LONGEST_WAIT_IN_LANE:
                leaving.append(job)
                continue
            self._hand.wait_for_retry(job, delay)
            self._outcomes.wait_in_lane(job, delay)
        return leaving

    def rerun_due(self, generation: int) -> None:
        """Run again the jobs whose retry is due, each still holding its key; the delivery is
        judged again, so the handler sees the new attempt and a fresh copy of the body."""
        for waited in self._hand.retries.due():
            self._hand.rerun(waited, self._judge.job_for(waited.delivery, generation))
