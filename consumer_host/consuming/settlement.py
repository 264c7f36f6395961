"""How a message leaves a consumer: acked, retried, deferred or dead-lettered.

Every path ends in exactly one transport call on the connection thread, and every copy (retry,
dead letter) is confirmed and routed by the broker before the original is acked (the transport
contract). The counters and log lines of each outcome live here too, so that ``status()``,
metrics and logs agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from consumer_host.errors import Defer, Reject
from consumer_host.message import ATTEMPT_HEADER, RETRY_AT_HEADER, Delivery, Message
from consumer_host.redaction import redact_text
from consumer_host.transports.base import Transport

from .decoding import BadMessage, preview
from .handling import Job, describe_error
from .middleware import Chain, Outcome, defer_step
from .options import ConsumerOptions

ERROR_HEADER_LIMIT = 500


def debug_enabled(log: Any) -> bool:
    """Whether ``log`` would emit DEBUG lines (structlog's stdlib and filtering loggers).

    Unconfigured structlog prints everything; per-message lines then stay off, as if at INFO,
    until someone (the CLI, ``Host.run()``, the application) configures logging."""
    if not structlog.is_configured():
        return False
    for check in ("isEnabledFor", "is_enabled_for"):
        method = getattr(log, check, None)
        if callable(method):
            return bool(method(10))
    return True


class Counters:
    """What an instance has done with its messages."""

    __slots__ = ("acked", "dead_lettered", "deferred", "refused", "rejected", "retried")

    def __init__(self) -> None:
        self.acked = 0
        self.retried = 0
        self.dead_lettered = 0
        self.rejected = 0
        self.deferred = 0
        self.refused = 0


class Settlement:
    """Settles finished jobs and undeliverable deliveries for one consumer instance."""

    def __init__(
        self,
        transport: Transport,
        options: ConsumerOptions,
        *,
        log: Any,
        wall: Callable[[], float],
        observe: Callable[[float], None],
        chain: Chain | None = None,
    ) -> None:
        self.transport = transport
        self.options = options
        self.counters = Counters()
        self._log = log
        self._wall = wall
        self._observe = observe
        self.chain = chain
        """The consumer's middleware: told about bad input, which never reaches a handler."""
        self.debug = False  # per-message lines cost too much to build and drop on the hot path
        # Named for log lines as the broker names it: a Redis transport's spec holds
        # ``{orders}.dlq`` on a cluster for the default ``orders.dlq``.
        self._dead_letter_queue = transport.spec.dead_letter

    def finish(self, job: Job) -> None:
        """Settle a job whose handler has returned or raised."""
        error = job.error
        delivery = job.delivery
        if error is None:
            self._observe(job.duration)
            self.transport.ack(delivery)
            self.counters.acked += 1
            if self.debug:
                self._log.debug("message_acked", message_id=delivery.message_id)
        elif isinstance(error, Defer):
            headers = {k: v for k, v in delivery.headers.items() if k != RETRY_AT_HEADER}
            self.transport.retry(delivery, headers, defer_step(error.seconds))
            self.counters.deferred += 1
            if self.debug:
                self._log.debug("message_deferred", message_id=delivery.message_id)
        elif isinstance(error, Reject):
            self._observe(job.duration)
            self.dead_letter(delivery, error, job.attempt, reason="rejected by handler")
        else:
            self._observe(job.duration)
            self._failed(delivery, error, job.attempt)

    def in_place_delay(self, job: Job) -> float | None:
        """How long ``job`` would wait for its retry or its deferral; ``None`` when it leaves
        the queue instead (acked, rejected, out of retries)."""
        error = job.error
        if error is None or isinstance(error, Reject):
            return None
        if isinstance(error, Defer):
            return max(0.0, float(error.seconds))
        if job.attempt > self.options.max_retries:
            return None
        return self.options.retry_delay(job.attempt)

    def waits_in_place(self, job: Job, delay: float) -> None:
        """``job`` stays unacked in its partition lane and runs again after ``delay``: count it
        and say so as a retry through the broker would be. Its delivery's attempt header goes
        up as a retry copy's would, so the next job, a dead letter, or a Streams give-back
        carry the right count."""
        error = job.error
        assert error is not None
        delivery = job.delivery
        delivery.headers.pop(RETRY_AT_HEADER, None)  # retried here, not held
        if isinstance(error, Defer):
            self.counters.deferred += 1
            if self.debug:
                self._log.debug("message_deferred", message_id=delivery.message_id, in_place=True)
            return
        self._observe(job.duration)
        delivery.headers[ATTEMPT_HEADER] = job.attempt + 1
        self.counters.retried += 1
        self._log.warning(
            "message_retrying",
            message_id=delivery.message_id,
            attempt=job.attempt,
            delay=delay,
            in_place=True,
            error=redact_text(describe_error(error)),
            exc_info=error if job.attempt == 1 else None,
        )

    def _failed(self, delivery: Delivery, error: BaseException, attempt: int) -> None:
        if attempt > self.options.max_retries:
            self.dead_letter(delivery, error, attempt, reason="max retries exceeded")
            return
        delay = self.options.retry_delay(attempt)
        headers = {**delivery.headers, ATTEMPT_HEADER: attempt + 1}
        headers.pop(RETRY_AT_HEADER, None)
        self.transport.retry(delivery, headers, delay)
        self.counters.retried += 1
        # The traceback once per message: with its first failure.
        self._log.warning(
            "message_retrying",
            message_id=delivery.message_id,
            attempt=attempt,
            delay=delay,
            error=redact_text(describe_error(error)),
            exc_info=error if attempt == 1 else None,
        )

    def dead_letter(
        self, delivery: Delivery, error: BaseException, attempt: int, *, reason: str
    ) -> None:
        self.transport.dead_letter(delivery, self._error_headers(delivery, error, attempt))
        self.counters.dead_lettered += 1
        first_failure = attempt <= 1 or self.options.max_retries == 0
        self._log.error(
            "message_dead_lettered",
            message_id=delivery.message_id,
            attempts=attempt,
            reason=reason,
            dead_letter_queue=self._dead_letter_queue,
            error=redact_text(describe_error(error)),
            exc_info=error if first_failure and not isinstance(error, Reject) else None,
        )

    def reject_bad_input(self, delivery: Delivery, bad: BadMessage) -> None:
        self.transport.dead_letter(delivery, self._error_headers(delivery, bad, delivery.attempt))
        self.counters.rejected += 1
        self._log.warning(
            "message_rejected",
            message_id=delivery.message_id,
            reason=bad.reason,
            detail=bad.detail[:200],
            content_type=delivery.content_type,
            body=preview(delivery.body),
            dead_letter_queue=self._dead_letter_queue,
        )
        if self.chain is not None and self.chain.after:
            self.chain.rejected(
                self._undecoded(delivery),
                Outcome(kind="rejected_bad_input", attempt=delivery.attempt, error=bad),
            )

    def _undecoded(self, delivery: Delivery) -> Message:
        """What middleware sees of bad input: the raw bytes as the body."""
        return Message(
            body=delivery.body,
            headers=dict(delivery.headers),
            content_type=delivery.content_type,
            message_id=delivery.message_id,
            delivery_info=delivery.delivery_info,
            redelivered=delivery.redelivered,
            attempt=delivery.attempt,
            queue=self.options.queue,
            raw=delivery.body,
        )

    def _error_headers(
        self, delivery: Delivery, error: BaseException, attempt: int
    ) -> dict[str, Any]:
        headers = {k: v for k, v in delivery.headers.items() if k != RETRY_AT_HEADER}
        if isinstance(error, BadMessage):
            text = f"{error.reason}: {redact_text(error.detail)}"
        else:
            # Handlers put anything into their exceptions, connection URLs included.
            described = describe_error(error)
            text = redact_text(described.partition(": ")[2] or described)
        headers.update(
            {
                "x-error": text[:ERROR_HEADER_LIMIT],
                "x-error-type": type(error).__name__,
                "x-failed-at": datetime.fromtimestamp(self._wall(), UTC).isoformat(),
                "x-original-queue": self.options.queue,
                "x-attempts": attempt,
            }
        )
        if isinstance(error, BadMessage):
            headers["x-error-reason"] = error.reason
        return headers
