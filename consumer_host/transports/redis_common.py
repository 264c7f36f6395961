"""What both Redis transports share: how a client is made, and how its errors are named."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from consumer_host.errors import BrokerRefused, BrokerUnavailable
from consumer_host.redaction import redact_text

from .base import Place

_REFUSED = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.NoPermissionError,
)
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
)


def consumer_id(instance: str) -> str:
    """``orders-2@web-7f9c-1``: stable across restarts of the same pod, unique between pods."""
    return f"{instance}@{socket.gethostname()}-{os.getpid()}"


def make_client(url: str, *, connect_timeout: float, socket_timeout: float) -> redis.Redis:
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
        transient = text.startswith(("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN"))
        error = BrokerUnavailable if transient else BrokerRefused
        raise error(f"cannot {Place(action, url, queue)}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {redact_text(str(exc)) or type(exc).__name__}"
