"""One consumer instance: the loop that fetches, dispatches to handlers, settles; reconnects;
pauses; drains.

Broker-agnostic: everything broker-specific sits behind :class:`~.transports.base.Transport`,
where handlers run behind :class:`~.executors.Executor`, and how a message leaves behind
:class:`~.settlement.Settlement`. The loop is the only user of the connection: handler threads
and tasks hand finished jobs back to it.

Handler failures are message failures (retry, then dead-letter); they never end the loop.
Broker errors are retried through :class:`~.connection.BrokerLink`, with backoff, behind the
broker circuit shared by every consumer of the same broker; only a permanent broker error (bad
credentials, ...) or a bug escapes to the supervisor.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable, CopyRefused, Defer, Reject
from consumer_host.message import Delivery
from consumer_host.supervision.backoff import Backoff, BackoffPolicy
from consumer_host.supervision.breaker import CircuitBreaker
from consumer_host.supervision.events import EventHook
from consumer_host.transports.base import Transport

from .connection import BrokerLink
from .decoding import BadMessage, decode
from .executors import Executor, InlineExecutor, executor_for
from .handling import Handler, Job, is_async, message_for
from .held import HeldRetries
from .killswitch import KillSwitchState, SwitchState
from .lanes import PartitionLanes
from .options import ConsumerOptions
from .settlement import Settlement, debug_enabled
from .watchdog import stuck_jobs

#: While handlers run, how long a fetch may block before finished jobs are settled.
BUSY_POLL = 0.005
#: Handler outcomes that say nothing about a downstream (the kill switch ignores them).
NOT_DOWNSTREAM_FAILURES = (Reject, Defer)
#: How many given-back message ids an instance remembers (see ``_remember_given_back``).
GIVEN_BACK_MEMORY = 10_000


class Consumer:
    """A worker that consumes one queue through one transport, owned by one thread."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        options: ConsumerOptions,
        *,
        transport: Transport,
        breaker: CircuitBreaker,
        broker: str,
        emit: EventHook,
        host: str,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
        registered: str | None = None,
        observe_handler: Callable[[float], None] | None = None,
        stuck_after: float = 300.0,
    ) -> None:
        self.name = name
        self.stuck_after = options.stuck_after or stuck_after
        self.handler = handler
        self.options = options
        self.transport = transport
        self.asynchronous = is_async(handler)
        self._clock = clock
        self._link = BrokerLink(
            transport,
            breaker,
            backoff=BackoffPolicy(
                minimum=options.reconnect_backoff_min, maximum=options.reconnect_backoff_max
            ),
            clock=clock,
            emit=emit,
            instance=name,
            worker=registered or name,
            queue=options.queue,
            broker=broker,
            rand=rand,
        )
        self._log = structlog.get_logger("consumer_host.consumer").bind(
            host=host, worker=registered or name, instance=name, queue=options.queue
        )
        self.settlement = Settlement(
            transport,
            options,
            log=self._log,
            wall=clock.wall,
            observe=observe_handler or (lambda _seconds: None),
        )
        self._context = {"instance": name, "queue": options.queue}
        self._executor: Executor | None = None
        self._held = HeldRetries(clock)
        self._in_hand = 0  # dispatched and not yet settled (waiting, queued or running)
        self._lanes = None if options.partition_by is None else PartitionLanes(options.partition_by)
        self._generation = 0
        self._inline = True
        self._dispatch: list[Job] = []  # accepted from this fetch, not yet handed to the executor
        self._paused = threading.Event()
        self._given_back: OrderedDict[str, int] = OrderedDict()
        self.kill_switch = (
            None if options.kill_switch is None else KillSwitchState(options.kill_switch, clock)
        )
        self._stop = threading.Event()
        self._refusals = Backoff(
            BackoffPolicy(minimum=self.options.reconnect_backoff_min, maximum=30.0), rand=rand
        )
        self.consuming = False
        self.last_progress = clock.now()

    # -- what the host reads ----------------------------------------------------------------------

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

    def in_flight_ids(self) -> list[str]:
        """Message ids of the handlers running now (for shutdown and stuck reports)."""
        return [job.delivery.message_id or "?" for job in self._running()]

    def running_jobs(self) -> list[Job]:
        return self._running()

    @property
    def queue(self) -> str:
        return self.options.queue

    def status(self) -> dict[str, Any]:
        counters = self.settlement.counters
        return {
            "queue": self.options.queue,
            "connected": self.connected,
            "consuming": self.consuming,
            "paused": self.paused,
            "kill_switch": None if self.kill_switch is None else str(self.kill_switch.state),
            "concurrency": self.options.concurrency,
            "acked": counters.acked,
            "retried": counters.retried,
            "dead_lettered": counters.dead_lettered + counters.rejected,
            "rejected_bad_input": counters.rejected,
            "in_flight": self.in_flight,
            "reconnects": self.reconnects,
            "deferred": counters.deferred,
            "copies_refused": counters.refused,
            "stuck": stuck_jobs(self._running(), self._clock.now(), self.stuck_after),
            "outcomes": {
                "acked": counters.acked,
                "retried": counters.retried,
                "dead_lettered": counters.dead_lettered,
                "rejected_bad_input": counters.rejected,
            },
        }

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

    def pause(self) -> None:
        """Take no new messages (prefetched ones go back to the queue); finish those in hand."""
        self._paused.set()

    def intake_closed(self) -> bool:
        """Paused and no longer subscribed (or not connected): nothing new will arrive."""
        return self._paused.is_set() and not (self.connected and self.consuming)

    def resume(self) -> None:
        self._paused.clear()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.settlement.debug = debug_enabled(self._log)
        # A restart after a loop failure starts clean: whatever the last run held was given
        # back by its connection's close, and its executor is gone.
        self._in_hand = 0
        self._held = HeldRetries(self._clock)
        if self.options.partition_by is not None:
            self._lanes = PartitionLanes(self.options.partition_by)
        self._generation += 1
        self._dispatch = []
        self._executor = executor_for(
            self.handler,
            concurrency=self.options.concurrency,
            asynchronous=self.asynchronous,
            now=self._clock.now,
            context=self._context,
            name=self.name,
        )
        self._inline = isinstance(self._executor, InlineExecutor)
        try:
            while not stop.is_set():
                subscribe = not self.paused
                if not self._link.open(stop, subscribe=subscribe):
                    return
                self._generation += 1
                self.consuming = subscribe  # a pause that came meanwhile gives back in _idle
                try:
                    self._consume(stop)
                except BrokerUnavailable as exc:
                    self.consuming = False
                    self._forget_unstarted()
                    if self._link.lost(stop, exc):
                        return
        finally:
            self._link.connected = False
            self.consuming = False
            if stop.is_set():
                self._finish_running(self._executor)
            self.transport.close()
            self._executor.close(timeout=1.0)

    def _finish_running(self, executor: Executor) -> None:
        """A stop whose drain lost its connection: let the handlers that run finish their work
        (the broker delivers their messages again; the host's drain deadline bounds this)."""
        while executor.running():
            executor.wait(0.05)
            executor.finished()

    def _forget_unstarted(self) -> None:
        """The connection is gone, and with it every unsettled delivery: the broker gives them
        out again. Jobs not yet started are dropped; running ones finish unsettled."""
        self._in_hand -= len(self._take_back_unstarted())
        self._held.take_all()

    def _consume(self, stop: threading.Event) -> None:
        executor = self._executor
        assert executor is not None
        transport = self.transport
        poll = self.options.poll_interval
        prefetch = self.options.prefetch_count
        while not stop.is_set():
            self._settle(executor.finished())
            allowed = self._intake()
            if allowed == 0:
                self._idle(stop)
                continue
            if not self.consuming:
                transport.start_consuming()
                self.consuming = True
            room = (prefetch if allowed is None else allowed) - self._in_hand
            if room <= 0:
                executor.wait(min(poll, 0.05))
                continue
            timeout = BUSY_POLL if self._in_hand else self._held.wait_at_most(poll)
            deliveries = transport.fetch(timeout, room)
            self.last_progress = self._clock.now()
            if deliveries and self._paused.is_set():
                self._remember_given_back(deliveries)
                transport.requeue(deliveries)  # paused while the fetch waited: take none
                continue
            for index, delivery in enumerate(deliveries):
                if stop.is_set():
                    self._remember_given_back(deliveries[index:])
                    transport.requeue(deliveries[index:])
                    break
                self._accept(delivery)
            if self._held:
                for delivery in self._held.due():
                    self._accept(delivery)
            if self._dispatch:
                executor.submit(self._dispatch)
                self._dispatch = []
        self._drain()

    def _intake(self) -> int | None:
        """How many messages may be in hand: ``None`` for up to prefetch, ``0`` for none."""
        if self._paused.is_set():
            return 0
        if self.kill_switch is not None:
            return self.kill_switch.intake()
        return None

    def _idle(self, stop: threading.Event) -> None:
        """Paused, quiet or kill switch open: give back what was not started, finish the rest."""
        assert self._executor is not None
        if self.consuming:
            self._give_back_unstarted()
            self.consuming = False
        self.last_progress = self._clock.now()
        if self._in_hand:
            self._executor.wait(0.05)
        else:
            self._clock.wait(stop, 0.1)

    def _give_back_unstarted(self) -> None:
        """Stop the subscription and return everything fetched but not started."""
        jobs = self._take_back_unstarted()
        self._in_hand -= len(jobs)
        unstarted = [job.delivery for job in jobs] + self._held.take_all()
        self._remember_given_back(unstarted)
        self.transport.stop_consuming()
        leftovers = self.transport.fetch(0, 1_000)
        if unstarted or leftovers:
            self.transport.requeue(unstarted + leftovers)

    def _take_back_unstarted(self) -> list[Job]:
        """Jobs dispatched but not started: out of the executor, out of their lanes."""
        assert self._executor is not None
        taken = self._dispatch + self._executor.take_back()
        self._dispatch = []
        if self._lanes is None:
            return taken
        waiting = self._lanes.take_waiting()
        for job in taken:
            self._lanes.drop(job.key)  # it held its key without running: free the key
        return taken + waiting

    def _remember_given_back(self, deliveries: list[Delivery]) -> None:
        """A quorum queue counts a give-back as a delivery: remember ours, so they are not
        mistaken for crashes when the messages come back (see ``_accept``)."""
        given_back = self._given_back
        for delivery in deliveries:
            message_id = delivery.message_id
            if message_id is not None:
                given_back[message_id] = given_back.get(message_id, 0) + 1
                given_back.move_to_end(message_id)
        while len(given_back) > GIVEN_BACK_MEMORY:
            given_back.popitem(last=False)

    def _drain(self) -> None:
        """Stop taking messages, give back what was not started, finish and settle the rest."""
        executor = self._executor
        assert executor is not None
        self.consuming = False
        self._give_back_unstarted()
        while self._in_hand > 0:
            executor.wait(0.05)
            self._settle(executor.finished())

    # -- one message ------------------------------------------------------------------------------

    def _accept(self, delivery: Delivery) -> None:
        """Hand a fetched delivery to a handler, or settle it without one."""
        if not self.transport.delays_retries and self._held.hold_if_early(delivery):
            return
        job = self._job_for(delivery)
        if job is None:
            return
        if self._inline:
            # One at a time on this thread: nothing to hand over, no lane to wait in.
            assert isinstance(self._executor, InlineExecutor)
            self._executor.run_now(job)
            self._settle_one(job)
            return
        self._in_hand += 1
        if self._lanes is not None and not self._lanes.admit(job):
            return  # its key is busy: it runs after the ones before it
        self._dispatch.append(job)  # handed over with the rest of its fetch, in one go

    def _job_for(self, delivery: Delivery) -> Job | None:
        """Judge a delivery: the job for its handler, or ``None`` once it was dead-lettered
        (unreadable, or delivered too often without a settlement)."""
        settlement = self.settlement
        if delivery.defect is not None:
            reason, _, detail = delivery.defect.partition(": ")
            self._settled_by(settlement.reject_bad_input, delivery, BadMessage(reason, detail))
            return None
        try:
            body = decode(delivery, self.options.accepted, self.options.max_body_bytes)
            message = message_for(delivery, body, delivery.attempt, self.options.queue)
        except BadMessage as bad:
            self._settled_by(settlement.reject_bad_input, delivery, bad)
            return None
        except RecursionError:
            # Headers nested past what copying can walk: the producer's fault, not the loop's.
            too_deep = BadMessage("bad_headers", "headers nested too deeply to copy")
            self._settled_by(settlement.reject_bad_input, delivery, too_deep)
            return None
        attempt = message.attempt
        count = delivery.delivery_count
        if count is not None and self._given_back:
            count -= self._given_back.get(delivery.message_id or "", 0)
        if count is not None and count > self.options.max_deliveries:
            # Handed out this often without an ack or a failure: the handler keeps killing the
            # process. Stop the loop of crashes here.
            error = RuntimeError(f"delivered {count} times without being settled")
            self._settled_by(
                lambda d, e: settlement.dead_letter(d, e, attempt, reason="max deliveries"),
                delivery,
                error,
            )
            return None
        if settlement.debug:
            self._log.debug("message_received", message_id=delivery.message_id, attempt=attempt)
        return Job(delivery=delivery, message=message, attempt=attempt, generation=self._generation)

    def _settle(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        executor = self._executor
        assert executor is not None
        # Account for the whole batch first: if a settlement below loses the connection, the
        # rest are the broker's to deliver again, but their slots and lanes must come free.
        self._in_hand -= len(jobs)
        if self._lanes is not None:
            for job in jobs:
                following = self._lanes.release(job.key)
                if following is not None:
                    executor.submit([following])
        for job in jobs:
            if job.generation != self._generation:
                self._log.debug(
                    "message_unsettled_after_reconnect", message_id=job.delivery.message_id
                )
                continue
            self._settle_one(job)
        self.last_progress = self._clock.now()

    def _settle_one(self, job: Job) -> None:
        """Settle a finished job and let the kill switch see its outcome."""
        try:
            self.settlement.finish(job)
        except CopyRefused as refused:
            self._refused(job.delivery, refused)
        else:
            if self._refusals.attempt:
                self._refusals.reset()
        switch = self.kill_switch
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

    def _settled_by(
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
        """The broker refused a copy: the original is back in the queue; back off, go on."""
        self.settlement.counters.refused += 1
        delay = self._refusals.next()
        self._log.warning(
            "copy_refused", message_id=delivery.message_id, error=str(refused), delay=delay
        )
        self._clock.wait(self._stop, delay)
