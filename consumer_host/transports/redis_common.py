"""What both Redis transports share: how a client is made and its errors are named, how ids and
headers are written, when periodic chores run, and slow start."""

from __future__ import annotations

import json
import os
import random
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from consumer_host.clock import Clock
from consumer_host.errors import BrokerRefused, BrokerUnavailable, CopyRefused
from consumer_host.message import Delivery
from consumer_host.redaction import redact_text

from .base import Place

_REFUSED = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.NoPermissionError,
)
# Jitter only spreads chores of many consumers apart; nothing depends on its quality.
_random = random.Random()

_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)


def consumer_id(instance: str) -> str:
    """``orders-2@web-7f9c-1``: stable across restarts of the same pod, unique between pods."""
    return f"{instance}@{socket.gethostname()}-{os.getpid()}"


def make_client(
    url: str, *, connect_timeout: float, socket_timeout: float, **extra: Any
) -> redis.Redis:
    """A client that never retries behind our back, with TLS verified for ``rediss://``.

    redis-py retries failed commands silently by default; a retried move whose first reply was
    lost would strand or double-deliver a message, so every failure must reach the consumer.
    ``socket_timeout`` bounds a read on a black-holed connection.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        **extra,
    }
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"  # a ?ssl_cert_reqs=none in the URL still wins
    return redis.Redis.from_url(url, **options)


@contextmanager
def translated(action: str, url: str, queue: str) -> Iterator[None]:
    """Map redis-py errors to BrokerRefused (permanent) or BrokerUnavailable, without secrets."""
    try:
        yield
    except _REFUSED as exc:
        raise BrokerRefused(f"cannot {Place(action, url, queue)}: {describe(exc)}") from exc
    except _UNAVAILABLE as exc:
        raise BrokerUnavailable(f"cannot {Place(action, url, queue)}: {describe(exc)}") from exc
    except redis_errors.ResponseError as exc:
        text = str(exc)
        transient = text.startswith(
            ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "BUSY", "OOM", "MISCONF")
        )
        error = BrokerUnavailable if transient else BrokerRefused
        raise error(f"cannot {Place(action, url, queue)}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact_text(str(exc)) or type(exc).__name__}"


def text(value: bytes | str) -> str:
    """A Redis reply as text (ids, names, scores are ASCII)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def dump_headers(headers: dict[str, Any]) -> str:
    """Headers as JSON, whatever they hold: a copy of a message must never fail to be written.

    ``default=str`` covers unknown types; a value that still cannot be dumped (a cycle, absurd
    nesting, keys that are not strings) is replaced by a note naming its type.
    """
    try:
        return json.dumps(headers, default=str)
    except (ValueError, TypeError, RecursionError):
        safe: dict[str, Any] = {}
        for key, value in headers.items():
            name = key if isinstance(key, str) else f"<key {type(key).__name__}>"
            try:
                json.dumps(value, default=str)
                safe[name] = value
            except (ValueError, TypeError, RecursionError):
                safe[name] = f"<not serializable: {type(value).__name__}>"
        return json.dumps(safe, default=str)


def refused(action: str, place: Place, key: str, found: bytes | str) -> CopyRefused:
    """The error for a copy a script would not make because ``key`` holds the wrong type."""
    return CopyRefused(
        f"cannot {action} {place}: {key!r} holds a {text(found)}; the original was left in "
        "the queue unacked"
    )


class Cadence:
    """When a periodic chore is next due, with jitter so that many consumers spread out."""

    def __init__(self, clock: Clock, interval: float, *, jitter: float = 0.5) -> None:
        self._clock = clock
        self.interval = interval
        self._jitter = jitter
        self._due = clock.now()

    def due(self) -> bool:
        """``True`` (and the next time is set) when the chore should run now."""
        now = self._clock.now()
        if now < self._due:
            return False
        spread = self.interval * self._jitter
        self._due = now + self.interval + _random.uniform(-spread, spread)
        return True

    def at(self, monotonic: float) -> None:
        """Run the chore no later than ``monotonic``."""
        self._due = min(self._due, monotonic)

    def now(self) -> None:
        self._due = self._clock.now()

    def remaining(self) -> float:
        """Seconds until the chore is due (0 when it is): how long a read may block."""
        return max(0.0, self._due - self._clock.now())


class SlowStart:
    """Which deliveries a transport handed out and not yet saw settled, and how many it may
    hand out next: one at a time after ``start_consuming`` until the first settle, then up to
    the prefetch (see :class:`~consumer_host.transports.base.Transport`)."""

    def __init__(self, prefetch: int) -> None:
        self.prefetch = max(1, prefetch)
        self.warm = False
        self.unsettled: Counter[Any] = Counter()

    def restart(self) -> None:
        self.warm = False

    def forget(self) -> None:
        self.warm = False
        self.unsettled.clear()

    def allowance(self, limit: int) -> int:
        """How many to take now (0: wait for a settle). Like AMQP's ``basic.qos``, never more
        unsettled than the prefetch (one before the first settle)."""
        window = self.prefetch if self.warm else 1
        return max(0, min(limit, window - self.unsettled.total()))

    def handed_out(self, handle: Any) -> None:
        self.unsettled[handle] += 1

    def settled(self, delivery: Delivery, *, counts: bool = True) -> None:
        """``counts=False`` for deliveries given back unstarted. Only a message delivered for
        the first time ends slow start: while redeliveries come (a crash left them), they come
        one at a time, so one that kills the process again is the only one counted again."""
        handle = delivery.handle
        self.unsettled[handle] -= 1
        if self.unsettled[handle] <= 0:
            del self.unsettled[handle]
        if counts and delivery.first_delivery:
            self.warm = True


class RedisProducer:
    """What the list and stream producers share: one client, errors named without secrets."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._redis = make_client(
            url, connect_timeout=connect_timeout, socket_timeout=max(connect_timeout, 5.0)
        )

    def close(self) -> None:
        with suppress(redis_errors.RedisError, OSError):
            self._redis.close()
