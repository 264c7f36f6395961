"""One consumer instance: the loop that fetches, dispatches to handlers, settles; reconnects;
pauses; drains.

Broker-agnostic: everything broker-specific sits behind :class:`~.transports.base.Transport`,
where handlers run behind :class:`~.executors.Executor`, how a delivery is judged before a
handler sees it in :class:`~.judging.Judge`, and how outcomes are settled in
:class:`~.outcomes.Outcomes` (behind it :class:`~.settlement.Settlement`). The loop is the
only user of the connection: handler threads and tasks hand finished jobs back to it.

Handler failures are message failures (retry, then dead-letter); they never end the loop.
Broker errors are retried through :class:`~.connection.BrokerLink`, with backoff, behind the
broker circuit shared by every consumer of the same broker; only a permanent broker error (bad
credentials, ...) or a bug escapes to the supervisor.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import BrokerUnavailable
from consumer_host.message import Delivery
from consumer_host.supervision.backoff import Backoff, BackoffPolicy
from consumer_host.supervision.breaker import CircuitBreaker
from consumer_host.supervision.events import EventHook
from consumer_host.transports.base import Transport

from .connection import BrokerLink
from .executors import Executor, InlineExecutor, executor_for
from .given_back import GivenBack
from .hand import Hand
from .handling import Handler, Job, is_async
from .judging import Judge
from .killswitch import KillSwitchState
from .middleware import Chain
from .options import ConsumerOptions
from .outcomes import Outcomes
from .paused_watch import PausedWatch
from .readings import ConsumerReadings
from .settlement import Settlement, debug_enabled
from .strict_order import StrictOrder
from .waking import idle_wait

#: While handlers run, how long a fetch may block before finished jobs are settled.
BUSY_POLL = 0.005


class Consumer(ConsumerReadings):
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
        chain: Chain | None = None,
        given_back: GivenBack | None = None,
    ) -> None:
        """``handler`` is what runs (with middleware, ``chain.wrap`` of the registered one);
        ``chain`` also hears about bad input, which never reaches a handler; ``given_back`` is
        shared by the instances of one queue (its own when not given)."""
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
            chain=chain,
        )
        self._context = {"instance": name, "queue": options.queue}
        self._executor: Executor | None = None
        self._hand = Hand(options, clock)
        self._generation = 0
        self._inline = True
        self._paused = threading.Event()
        self._paused_watch = PausedWatch(transport, clock)
        self.kill_switch = (
            None if options.kill_switch is None else KillSwitchState(options.kill_switch, clock)
        )
        if given_back is None:  # not `or`: an empty shared memory is falsy
            given_back = GivenBack()
        self._outcomes = Outcomes(
            self.settlement,
            self.kill_switch,
            Backoff(BackoffPolicy(minimum=options.reconnect_backoff_min, maximum=30.0), rand=rand),
            given_back=given_back,
            clock=clock,
            log=self._log,
        )
        self._judge = Judge(
            options, self.settlement, self._outcomes.settled_by, self._log, given_back
        )
        # Strict per-key order: a failed message waits for its retry in its lane.
        self._strict: StrictOrder | None = None
        if options.partition_by is not None and options.partition_order == "strict":
            self._strict = StrictOrder(self._hand, self.settlement, self._outcomes, self._judge)
        self.consuming = False
        self.last_progress = clock.now()

    def pause(self) -> None:
        """Take no new messages (prefetched ones go back to the queue); finish those in hand."""
        self._paused.set()
        self.wake()

    def wake(self) -> None:
        """End an idle wait now: a stop or a pause is waiting (see :mod:`.waking`)."""
        self.transport.wake()

    def on_stop_requested(self) -> None:
        """The supervisor's hook when it is asked to stop this consumer."""
        self.wake()

    def intake_closed(self) -> bool:
        """Paused and no longer subscribed (or not connected): nothing new will arrive."""
        return self._paused.is_set() and not (self.connected and self.consuming)

    def resume(self) -> None:
        self._paused.clear()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._outcomes.stop = stop
        self.settlement.debug = debug_enabled(self._log)
        self._generation += 1
        self._executor = executor_for(
            self.handler,
            concurrency=self.options.concurrency,
            asynchronous=self.asynchronous,
            now=self._clock.now,
            context=self._context,
            name=self.name,
        )
        # Inline means settled at once, without lanes: strict order needs its lane to wait in.
        self._inline = isinstance(self._executor, InlineExecutor) and self._strict is None
        # A restart after a loop failure starts clean (see ``Hand.reset``).
        self._hand.reset(self._executor)
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
                    self._hand.forget_unstarted()
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

    def _consume(self, stop: threading.Event) -> None:
        executor = self._executor
        assert executor is not None
        transport = self.transport
        poll = idle_wait(transport, self.options.poll_interval)
        prefetch = self.options.prefetch_count
        hand = self._hand
        while not stop.is_set():
            self._settle(executor.finished())
            allowed = self._intake()
            if allowed == 0:
                self._idle(stop)
                continue
            if self._strict is not None and hand.retries:
                self._strict.rerun_due(self._generation)
            if not self.consuming:
                transport.start_consuming()
                self.consuming = True
            # Jobs waiting for their key take no room from other keys, up to a second window.
            window = prefetch + min(hand.parked, prefetch)
            room = (window if allowed is None else allowed) - hand.count
            busy = hand.count > hand.parked  # a handler runs or will: its end must be seen soon
            if room <= 0:
                if busy:
                    executor.wait(min(poll, 0.05))
                else:
                    self._clock.wait(stop, hand.retries.wait_at_most(0.05))
                continue
            timeout = (
                BUSY_POLL
                if busy
                else min(hand.held.wait_at_most(poll), hand.retries.wait_at_most(poll))
            )
            deliveries = transport.fetch(timeout, room)
            self.last_progress = self._clock.now()
            if deliveries and self._paused.is_set():
                self._judge.remember_given_back(deliveries)
                transport.requeue(deliveries)  # paused while the fetch waited: take none
                continue
            for index, delivery in enumerate(deliveries):
                if stop.is_set():
                    self._judge.remember_given_back(deliveries[index:])
                    transport.requeue(deliveries[index:])
                    break
                self._accept(delivery)
            if hand.held:
                for delivery in hand.held.due():
                    self._accept(delivery)
            hand.hand_over()
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
        elif self._hand.parked:
            self._give_back_parked()  # failed while paused: its retry waits in the queue
        self.last_progress = self._clock.now()
        self._paused_watch.check()  # a dead connection is seen while paused, not at resume
        if self._hand.count:
            self._executor.wait(0.05)
        else:
            self._clock.wait(stop, 0.1)

    def _give_back_unstarted(self) -> None:
        """Stop the subscription and return everything fetched but not started."""
        unstarted = self._hand.give_back_unstarted()
        self._judge.remember_given_back(unstarted)
        self.transport.stop_consuming()
        leftovers = self.transport.fetch(0, 1_000)
        if unstarted or leftovers:
            self.transport.requeue(unstarted + leftovers)

    def _drain(self) -> None:
        """Stop taking messages, give back what was not started, finish and settle the rest."""
        executor = self._executor
        assert executor is not None
        self.consuming = False
        self._give_back_unstarted()
        while self._hand.count > 0:
            executor.wait(0.05)
            self._settle(executor.finished())
            if self._hand.parked:
                self._give_back_parked()  # a retry would outlast the drain: the queue keeps it

    def _give_back_parked(self) -> None:
        """Give back messages whose retry waits in their lane, and what waits behind them."""
        parked = self._hand.give_back_unstarted()
        if parked:
            self._judge.remember_given_back(parked)
            self.transport.requeue(parked)

    # -- one message ------------------------------------------------------------------------------

    def _accept(self, delivery: Delivery) -> None:
        """Hand a fetched delivery to a handler, or settle it without one."""
        if not self.transport.delays_retries and self._hand.held.hold_if_early(delivery):
            return
        job = self._judge.job_for(delivery, self._generation)
        if job is None:
            return
        if self._inline:
            # One at a time on this thread: nothing to hand over, no lane to wait in.
            assert isinstance(self._executor, InlineExecutor)
            self._executor.run_now(job)
            self._outcomes.settle_one(job)
            return
        self._hand.admit(job)

    def _settle(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        if self._strict is not None:
            jobs = self._strict.keep_retries(jobs, self._generation)
        # Account for the whole batch first: if a settlement below loses the connection, the
        # rest are the broker's to deliver again, but their slots and lanes must come free.
        self._hand.finished(jobs)
        for job in jobs:
            if job.generation != self._generation:
                self._log.debug(
                    "message_unsettled_after_reconnect", message_id=job.delivery.message_id
                )
                continue
            self._outcomes.settle_one(job)
        self.last_progress = self._clock.now()
