"""Dead letters, whatever broker holds them: what one says, how they group, which ones a command
picks, and what a replayed copy carries.

The consumer dead-letters a message with its error in headers (``x-error``, ``x-error-type``,
``x-failed-at``, ``x-original-queue``, ``x-attempts``, and ``x-error-reason`` for bad input).
The per-broker stores (``transports/kombu_dead_letters.py``, ``transports/redis_dead_letters.py``)
walk a dead-letter queue oldest first and hand each message's headers to the pieces here, so the
three brokers group, select and rewrite alike. Nothing here holds a body: listing streams through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from consumer_host.errors import BrokerError
from consumer_host.message import ATTEMPT_HEADER, RETRY_AT_HEADER

ERROR_HEADER = "x-error"
ERROR_TYPE_HEADER = "x-error-type"
FAILED_AT_HEADER = "x-failed-at"

#: What the consumer adds when it dead-letters a message. A replayed copy is a fresh start, so
#: these go, with the attempt counter and a retry's hold-back time; every other header stays.
DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_HEADER,
        ERROR_TYPE_HEADER,
        "x-error-reason",
        FAILED_AT_HEADER,
        "x-original-queue",
        "x-attempts",
        ATTEMPT_HEADER,
        RETRY_AT_HEADER,
    }
)

#: Longest sample error text kept per group.
SAMPLE_LIMIT = 500


def replay_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers of a replayed copy: the attempt counter reset, the error record dropped."""
    return {
        key: value
        for key, value in headers.items()
        if key not in DEAD_LETTER_HEADERS and not key.startswith("x-error")
    }


def error_type_of(headers: dict[str, Any]) -> str | None:
    value = headers.get(ERROR_TYPE_HEADER)
    return None if value is None else str(value)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which dead letters a replay or purge takes: one error type or all, and at most ``limit``."""

    error_type: str | None = None
    limit: int | None = None

    def matches(self, headers: dict[str, Any]) -> bool:
        return self.error_type is None or error_type_of(headers) == self.error_type

    def exhausted(self, taken: int) -> bool:
        return self.limit is not None and taken >= self.limit


@dataclass(kw_only=True)
class Group:
    """Dead letters of one consumer with one error type."""

    consumer: str
    error_type: str | None
    count: int = 0
    first_failed_at: str | None = None
    last_failed_at: str | None = None
    sample_error: str | None = None
    _first: datetime | None = field(default=None, repr=False)
    _last: datetime | None = field(default=None, repr=False)

    def add(self, headers: dict[str, Any]) -> None:
        self.count += 1
        if self.sample_error is None and headers.get(ERROR_HEADER) is not None:
            self.sample_error = str(headers[ERROR_HEADER])[:SAMPLE_LIMIT]
        raw = headers.get(FAILED_AT_HEADER)
        when = _parse_time(raw)
        if when is None:
            return
        if self._first is None or when < self._first:
            self._first, self.first_failed_at = when, str(raw)
        if self._last is None or when > self._last:
            self._last, self.last_failed_at = when, str(raw)

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "error_type": self.error_type,
            "count": self.count,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "sample_error": self.sample_error,
        }


def summarize(consumer: str, headers_seen: Iterable[dict[str, Any]]) -> list[Group]:
    """Group one consumer's dead letters by error type, in order of first appearance."""
    groups: dict[str | None, Group] = {}
    for headers in headers_seen:
        error_type = error_type_of(headers)
        group = groups.get(error_type)
        if group is None:
            group = groups[error_type] = Group(consumer=consumer, error_type=error_type)
        group.add(headers)
    return list(groups.values())


class DeadLetterStore(Protocol):
    """One consumer's dead-letter queue on one broker.

    ``browse`` changes nothing; ``replay`` confirms each copy on the consumer's queue before it
    removes the dead letter (a crash in between duplicates, never loses); dead letters that do
    not match the selection stay where they are, in order.
    """

    def browse(self) -> Iterable[dict[str, Any]]:
        """The headers of every dead letter, oldest first."""
        ...

    def replay(self, selection: Selection) -> int:
        """Move the matching dead letters back to the queue; how many moved."""
        ...

    def purge(self, selection: Selection) -> int:
        """Delete the matching dead letters; how many went."""
        ...

    def close(self) -> None:
        """Let go of the broker; never raises."""


class DeadLetterMoveStopped(BrokerError):
    """A replay or purge stopped part way (the broker failed, refused or could not route a copy).

    ``done`` messages were moved or deleted before it; the one being handled stays a dead letter.
    """

    def __init__(self, message: str, *, done: int) -> None:
        super().__init__(message)
        self.done = done


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    # The consumer writes UTC with an offset; a producer's naive time is taken as UTC too, so
    # the two can be compared.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
