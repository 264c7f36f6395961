"""Drive a host's consumers without a broker: the real decode, middleware and settlement code
behind a transport that records what it was asked to do.

What runs is what a consumer instance runs for one delivery (``Consumer`` minus the loop):
the consumer's own :class:`~consumer_host.consuming.judging.Judge` decodes the delivery (bad
input is dead-lettered there), a partition lane gives it its key, the handler runs wrapped in
the host's middleware by ``run_sync`` / ``run_async``, and
:class:`~consumer_host.consuming.settlement.Settlement` settles it, so retry delays, attempt
headers and dead-letter headers are the ones a broker would get.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.consuming.decoding import BadMessage
from consumer_host.consuming.handling import Job, is_async, run_async, run_sync
from consumer_host.consuming.judging import Judge
from consumer_host.consuming.lanes import PartitionLanes
from consumer_host.consuming.middleware import ConsumerInfo, wrap_handler
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.consuming.settlement import Settlement
from consumer_host.errors import ConfigError, Defer
from consumer_host.host import Host
from consumer_host.hosting.registry import Registration
from consumer_host.message import ATTEMPT_HEADER, Delivery
from consumer_host.transports.broker import messaging_system

from .recording import RecordingPublisher, RecordingTransport, Settled

_log = structlog.get_logger("consumer_host.testing")


class Harness:
    """Sends messages to ``host``'s registered consumers, one at a time, on this thread.

    ``host.publish`` is recorded in :attr:`published` instead of reaching a broker.
    """

    def __init__(self, host: Host, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.host = host
        self.clock = clock
        self.settled: list[Settled] = []
        recorder = RecordingPublisher(host.consumers.middleware)
        self._publisher = host.publisher
        host.publisher = recorder  # type: ignore[assignment]
        self.published = recorder.messages
        """Messages handlers published: dicts of queue, body, headers, message_id."""

    def close(self) -> None:
        """Give the host its own ``publish`` back (the fixture does this after each test)."""
        self.host.publisher = self._publisher

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sending ------------------------------------------------------------------------------

    def send(
        self,
        consumer: str,
        body: Any = None,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        attempt: int = 1,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> Settled:
        """Deliver ``body`` (as JSON, or ``raw`` bytes as they are) to the consumer registered
        as ``consumer`` (or consuming that queue) and return what became of it."""
        registration, delivery = self._delivery(
            consumer, body, headers, message_id, attempt, raw, content_type
        )
        return self._deliver(registration, delivery)

    async def send_async(self, consumer: str, body: Any = None, **options: Any) -> Settled:
        """:meth:`send` from a test that runs in an event loop (``async def`` handlers run as
        tasks of that loop)."""
        registration, delivery = self._delivery(
            consumer,
            body,
            options.get("headers"),
            options.get("message_id"),
            options.get("attempt", 1),
            options.get("raw"),
            options.get("content_type", "application/json"),
        )
        return await self._deliver_async(registration, delivery)

    def send_task(
        self,
        task: str,
        *args: Any,
        queue: str = "celery",
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        eta: datetime | None = None,
        expires: datetime | None = None,
        retries: int = 0,
        headers: dict[str, Any] | None = None,
    ) -> Settled:
        """Deliver a Celery task message (protocol 2, as ``app.send_task`` sends it)."""
        task_id = task_id or str(uuid.uuid4())
        celery_headers: dict[str, Any] = {
            "lang": "py",
            "task": task,
            "id": task_id,
            "root_id": task_id,
            "retries": retries,
            "eta": None if eta is None else eta.isoformat(),
            "expires": None if expires is None else expires.isoformat(),
            **(headers or {}),
        }
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        return self.send(
            f"celery.{queue}",
            [list(args), kwargs or {}, embed],
            headers=celery_headers,
            message_id=task_id,
        )

    def redeliver(self, settled: Settled) -> Settled:
        """The retried or deferred copy comes back: deliver it with the copy's headers."""
        if settled.outcome not in {"retried", "deferred"}:
            raise ValueError(f"a message that was {settled.outcome} does not come back")
        registration = self._registration(settled.queue)
        delivery = _delivery(
            settled.delivery.body,
            settled.delivery.content_type,
            settled.headers,
            settled.delivery.message_id,
        )
        return self._deliver(registration, delivery)

    # -- the real path ------------------------------------------------------------------------

    def _delivery(  # noqa: PLR0917 - send's arguments, passed on
        self,
        consumer: str,
        body: Any,
        headers: dict[str, Any] | None,
        message_id: str | None,
        attempt: int,
        raw: bytes | None,
        content_type: str | None,
    ) -> tuple[Registration, Delivery]:
        registration = self._registration(consumer)
        headers = dict(headers or {})
        if attempt != 1:
            headers[ATTEMPT_HEADER] = attempt
        data = raw if raw is not None else json.dumps(body).encode()
        return registration, _delivery(data, content_type, headers, message_id)

    def _registration(self, consumer: str) -> Registration:
        registrations = [r for r in self.host.registry.registrations if r.kind != "worker"]
        for registration in registrations:
            options = registration.consumer_options
            if consumer in {registration.name, options.queue if options else None}:
                return registration
        known = ", ".join(r.name for r in registrations) or "none"
        raise ConfigError(f"no consumer named or consuming {consumer!r} (consumers: {known})")

    def _parts(
        self, registration: Registration
    ) -> tuple[ConsumerOptions, Any, Settlement, RecordingTransport]:
        options = registration.consumer_options
        assert options is not None
        assert registration.handler is not None
        info = ConsumerInfo(
            name=registration.name,
            instance=registration.name,
            queue=options.queue,
            system=messaging_system(self._broker_url()),
        )
        handler, chain = wrap_handler(
            registration.handler, self.host.consumers.middleware, options, info
        )
        transport = RecordingTransport(options.queue_spec())
        settlement = Settlement(
            transport,  # type: ignore[arg-type]  # only the settling calls and its spec are used
            options,
            log=_log.bind(worker=registration.name, queue=options.queue),
            wall=self.clock.wall,
            observe=lambda _seconds: None,
            chain=chain,
        )
        return options, handler, settlement, transport

    def _broker_url(self) -> str:
        """The host's broker as far as it is known, without resolving it (which reads the
        environment and may create the embedded broker's folder)."""
        consumers = self.host.consumers
        return consumers.choice.url if consumers.chosen else self.host.broker or "memory://"

    def _judge(
        self, options: ConsumerOptions, settlement: Settlement, delivery: Delivery
    ) -> Job | BadMessage:
        """As the consumer judges a delivery (its own :class:`Judge`): bad input is
        dead-lettered, the rest is a job, given its ``partition_by`` key by a real lane."""
        rejected: list[BadMessage] = []

        def settled_by(settle: Callable[[Delivery, Any], None], target: Delivery, arg: Any) -> None:
            settle(target, arg)
            if isinstance(arg, BadMessage):
                rejected.append(arg)

        job = Judge(options, settlement, settled_by, _log).job_for(delivery, generation=0)
        if job is None:
            return rejected[0]
        if options.partition_by is not None:
            PartitionLanes(options.partition_by).admit(job)
        return job

    def _deliver(self, registration: Registration, delivery: Delivery) -> Settled:
        options, handler, settlement, transport = self._parts(registration)
        job = self._judge(options, settlement, delivery)
        if isinstance(job, Job):
            if is_async(handler):
                asyncio.run(run_async(handler, job, self.clock.now))
            else:
                run_sync(handler, job, self.clock.now)
            settlement.finish(job)
        return self._settled(options, delivery, job, transport)

    async def _deliver_async(self, registration: Registration, delivery: Delivery) -> Settled:
        options, handler, settlement, transport = self._parts(registration)
        job = self._judge(options, settlement, delivery)
        if isinstance(job, Job):
            if is_async(handler):
                await run_async(handler, job, self.clock.now)
            else:
                run_sync(handler, job, self.clock.now)
            settlement.finish(job)
        return self._settled(options, delivery, job, transport)

    def _settled(
        self,
        options: ConsumerOptions,
        delivery: Delivery,
        job: Job | BadMessage,
        transport: RecordingTransport,
    ) -> Settled:
        bad = isinstance(job, BadMessage)
        common: dict[str, Any] = {
            "attempt": delivery.attempt,
            "delivery": delivery,
            "message": None if isinstance(job, BadMessage) else job.message,
            "key": None if isinstance(job, BadMessage) else job.key,
            "error": job if isinstance(job, BadMessage) else job.error,
        }
        settled: Settled
        if transport.acked:
            settled = Settled(
                outcome="acked", queue=options.queue, headers=dict(delivery.headers), **common
            )
        elif transport.retried:
            _, headers, delay = transport.retried[0]
            deferred = isinstance(common["error"], Defer)
            settled = Settled(
                outcome="deferred" if deferred else "retried",
                queue=options.queue,
                headers=headers,
                delay=delay,
                **common,
            )
        else:
            _, headers = transport.dead_lettered[0]
            settled = Settled(
                outcome="rejected_bad_input" if bad else "dead_lettered",
                queue=options.dead_letter_queue,
                headers=headers,
                **common,
            )
        self.settled.append(settled)
        return settled


def _delivery(
    body: bytes, content_type: str | None, headers: dict[str, Any], message_id: str | None
) -> Delivery:
    return Delivery(
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        headers=dict(headers),
        properties={"message_id": message_id or str(uuid.uuid4())},
        delivery_info={},
    )
