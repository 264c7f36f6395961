"""What one consumer holds between a fetch and a settlement: jobs accepted from the current
fetch and not yet handed over, jobs waiting in their partition lane, jobs with the executor,
failed jobs waiting in their lane for their retry, and retries held until they are due; and how
many messages that is in all."""

from __future__ import annotations

from consumer_host.clock import Clock
from consumer_host.message import Delivery

from .executors import Executor
from .handling import Job
from .held import HeldRetries
from .lane_retries import LaneRetries
from .lanes import PartitionLanes
from .options import ConsumerOptions


class Hand:
    """The messages a consumer holds, and where each waits."""

    def __init__(self, options: ConsumerOptions, clock: Clock) -> None:
        self._options = options
        self._clock = clock
        self._executor: Executor | None = None
        self.count = 0  # dispatched and not yet settled (waiting, queued or running)
        self.held = HeldRetries(clock)
        self.retries = LaneRetries(clock)
        self._lanes = None if options.partition_by is None else PartitionLanes(options.partition_by)
        self._dispatch: list[Job] = []  # accepted from this fetch, not yet handed to the executor

    def reset(self, executor: Executor) -> None:
        """A new run starts clean: whatever the last run held was given back by its
        connection's close, and its executor is gone."""
        self._executor = executor
        self.count = 0
        self.held = HeldRetries(self._clock)
        self.retries = LaneRetries(self._clock)
        if self._options.partition_by is not None:
            self._lanes = PartitionLanes(self._options.partition_by)
        self._dispatch = []

    def admit(self, job: Job) -> None:
        """Take ``job`` into hand: it runs with the rest of its fetch, or after the ones before
        it in its partition lane."""
        self.count += 1
        if self._lanes is not None and not self._lanes.admit(job):
            return  # its key is busy: it runs after the ones before it
        self._dispatch.append(job)  # handed over with the rest of its fetch, in one go

    @property
    def parked(self) -> int:
        """Jobs in hand that wait for their key (behind another job of it, or for their own
        retry): nothing of theirs runs, so they need not take the room of other keys."""
        waiting = 0 if self._lanes is None else self._lanes.waiting
        return waiting + len(self.retries)

    def wait_for_retry(self, job: Job, delay: float) -> None:
        """``job`` failed and runs again after ``delay``: it keeps its key, and its slot in the
        count, while its key's later jobs wait behind it."""
        self.retries.wait(job, delay)

    def rerun(self, waited: Job, job: Job | None) -> None:
        """``waited``'s retry is due: ``job`` runs it again under the same key; ``None`` when
        it was settled without a handler, which frees the key for the next of its lane."""
        assert self._executor is not None
        if job is None:
            self.finished([waited])
            return
        job.key = waited.key
        self._executor.submit([job])

    def hand_over(self) -> None:
        """Give the executor the jobs accepted from this fetch, in one go."""
        if self._dispatch:
            assert self._executor is not None
            self._executor.submit(self._dispatch)
            self._dispatch = []

    def finished(self, jobs: list[Job]) -> None:
        """``jobs`` are done: their slots come free, and the next of each lane may run."""
        assert self._executor is not None
        self.count -= len(jobs)
        if self._lanes is not None:
            for job in jobs:
                following = self._lanes.release(job.key)
                if following is not None:
                    self._executor.submit([following])

    def forget_unstarted(self) -> None:
        """The connection is gone, and with it every unsettled delivery: jobs not yet started
        and held retries are dropped (the broker gives them out again)."""
        self._take_back_unstarted()
        self.held.take_all()

    def give_back_unstarted(self) -> list[Delivery]:
        """Take back every delivery fetched but not started, for the queue."""
        jobs = self._take_back_unstarted()
        return [job.delivery for job in jobs] + self.held.take_all()

    def _take_back_unstarted(self) -> list[Job]:
        """Jobs dispatched but not started: out of the executor, out of their lanes. A job
        waiting for its retry comes first: it was fetched before the rest of its key."""
        assert self._executor is not None
        taken = self.retries.take_all() + self._dispatch + self._executor.take_back()
        self._dispatch = []
        if self._lanes is not None:
            waiting = self._lanes.take_waiting()
            for job in taken:
                self._lanes.drop(job.key)  # it held its key without running: free the key
            taken += waiting
        self.count -= len(taken)
        return taken
