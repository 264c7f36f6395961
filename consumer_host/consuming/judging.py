"""Judging a fetched delivery before any handler sees it: unreadable input is rejected, a
message delivered too often without a settlement is dead-lettered, the rest become jobs.

A quorum queue counts a give-back as a delivery: the give-backs this process made
(:mod:`.given_back`) are taken off a delivery's count, so they are not mistaken for crashes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer_host.message import Delivery

from .decoding import BadMessage, decode
from .given_back import GivenBack
from .handling import Job, message_for
from .options import ConsumerOptions
from .settlement import Settlement

#: Runs one settlement of a delivery without a handler (see ``Outcomes.settled_by``).
SettleBy = Callable[[Callable[[Delivery, Any], None], Delivery, Any], None]


class Judge:
    """Turns deliveries into jobs, or settles them without a handler."""

    def __init__(
        self,
        options: ConsumerOptions,
        settlement: Settlement,
        settled_by: SettleBy,
        log: Any,
        given_back: GivenBack | None = None,
    ) -> None:
        """``given_back``: shared by the instances of one queue (its own when not given)."""
        self._options = options
        self._settlement = settlement
        self._settled_by = settled_by
        self._log = log
        self._given_back = GivenBack() if given_back is None else given_back

    def remember_given_back(self, deliveries: list[Delivery]) -> None:
        """A quorum queue counts a give-back as a delivery: remember ours, so they are not
        mistaken for crashes when the messages come back (see ``job_for``)."""
        self._given_back.remember(deliveries)

    def job_for(self, delivery: Delivery, generation: int) -> Job | None:
        """Judge a delivery: the job for its handler, or ``None`` once it was dead-lettered
        (unreadable, or delivered too often without a settlement)."""
        settlement = self._settlement
        options = self._options
        if delivery.defect is not None:
            reason, _, detail = delivery.defect.partition(": ")
            self._settled_by(settlement.reject_bad_input, delivery, BadMessage(reason, detail))
            return None
        try:
            body = decode(delivery, options.accepted, options.max_body_bytes)
            message = message_for(delivery, body, delivery.attempt, options.queue)
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
            count -= self._given_back.times(delivery)
        if count is not None and count > options.max_deliveries:
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
        return Job(delivery=delivery, message=message, attempt=attempt, generation=generation)
