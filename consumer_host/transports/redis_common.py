"""What both Redis transports share: how a client is made and its errors are named, how ids and
headers are written and when periodic chores run (slow start: suspects.py)."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from redis import exceptions as redis_errors

from consumer_host.clock import Clock
from consumer_host.errors import BrokerFailingOver, BrokerRefused, BrokerUnavailable, CopyRefused
from consumer_host.redaction import redact_text, redact_url

from .base import Place, connection_name
from .redis_clients import build_client
from .redis_failover import FAILING_OVER, failing_over, is_replicated

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
    # A cluster client's own failures: no seed answering, a slot map it cannot read. Counted
    # as any outage; only the ones FAILING_OVER names are a failover.
    redis_errors.RedisClusterException,
    OSError,
)

#: Replies that are an outage, not a refusal: a server briefly unable to serve (BUSY script,
#: OOM, MISCONF failing to save), by the reply's code (BUSYGROUP is not BUSY).
_TRANSIENT = re.compile(r"(BUSY|OOM|MISCONF)\b")
#: NOGROUP anywhere in the text (a script's error wraps the code): the consumer group or its
#: stream was deleted under us. The reconnect creates both again (``_ensure_group``), so it is
#: an outage the consumer gets over by itself, not a refusal that should trip it for good.
_GONE = re.compile(r"\bNOGROUP\b")

_TRANSLATED: tuple[type[BaseException], ...] = (
    *FAILING_OVER,
    *_UNAVAILABLE,
    redis_errors.ResponseError,
)


def consumer_id(instance: str) -> str:
    """``orders-2@web-7f9c-1-3fa9c1``: a new id each call, made once per transport and kept
    across its reconnects (acks that failed are resent to what it names).

    Host name and pid say where a consumer runs, but do not tell two live ones apart: containers
    run as PID 1 on one host network, compose replicas share a ``hostname:``. Two list consumers
    with one id would share a processing list and alive key (each taking the other's in-flight
    messages back to the queue at start: duplicates), two stream consumers one PEL. The random
    token makes each process start its own consumer; what a dead one held is recovered by the
    sweep once its alive key expires (lists) or by XAUTOCLAIM (Streams), never by its name."""
    return f"{instance}@{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def make_client(
    url: str,
    *,
    connect_timeout: float,
    socket_timeout: float,
    instance: str = "client",
    **extra: Any,
) -> redis.Redis:
    """A client that never retries behind our back, with TLS verified for ``rediss://``; for a
    Sentinel set or a Redis Cluster when the URL says so (see ``redis_clients``).

    redis-py retries failed commands silently by default; a retried move whose first reply was
    lost would strand or double-deliver a message, so every failure must reach the consumer.
    ``socket_timeout`` bounds a read on a black-holed connection. Every connection of the pool
    is named for ``instance`` (``CLIENT SETNAME``, see :func:`~.base.connection_name`).
    """
    try:
        return build_client(
            url,
            connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            client_name=connection_name(instance),
            **extra,
        )
    except _UNAVAILABLE as exc:
        # A cluster client reads the slot map as it is made, a single-connection client
        # connects: a broker that is down or failing over, said without secrets.
        where = f"cannot connect to {redact_url(url)}: {describe(exc)}"
        if failing_over(exc, replicated=is_replicated(url)):
            raise BrokerFailingOver(where) from exc
        raise BrokerUnavailable(where) from exc


@contextmanager
def translated(action: str, url: str, queue: str) -> Iterator[None]:
    """Map redis-py errors to BrokerRefused (permanent), BrokerFailingOver (a failover under
    way: see redis_failover) or BrokerUnavailable (an outage, reconnected), without secrets.

    Any other error reply is permanent: a wrong key type, an unknown command, a bad argument
    would fail again on every reconnect."""
    try:
        yield
    except _REFUSED as exc:
        raise BrokerRefused(f"cannot {Place(action, url, queue)}: {describe(exc)}") from exc
    except _TRANSLATED as exc:
        where = f"cannot {Place(action, url, queue)}: {describe(exc)}"
        if failing_over(exc, replicated=is_replicated(url)):
            raise BrokerFailingOver(where) from exc
        if isinstance(exc, _UNAVAILABLE):
            raise BrokerUnavailable(where) from exc
        message = str(exc)
        transient = _TRANSIENT.match(message) is not None or _GONE.search(message) is not None
        raise (BrokerUnavailable if transient else BrokerRefused)(where) from exc


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
