"""What the Redis transport tests share: a queue of their own, a plain client, transports that
are closed after the test, and fetching until enough deliveries came."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from consumer_host.transports.base import QueueSpec

from .brokers import unique_queue


@pytest.fixture
def queue(redis_broker):
    name = unique_queue("rt")
    redis_broker.queues.add(name)  # removed after the test, with its dead letters and keys
    return name


@pytest.fixture
def client(redis_broker):
    connection = redis.Redis.from_url(redis_broker.url)
    yield connection
    connection.close()


def made_by(transport_class: Any, url: str) -> Iterator[Any]:
    """For a ``transports`` fixture: ``make(queue, prefetch=..., **options)`` connects and starts
    a transport; every one still open is closed after the test."""
    made: list[Any] = []

    def make(queue: str, instance: str | None = None, prefetch: int = 10, **options: Any) -> Any:
        spec = QueueSpec(queue=queue, dead_letter=f"{queue}.dlq", prefetch=prefetch)
        transport = transport_class(
            url, spec, instance=instance or f"t-{uuid.uuid4().hex[:6]}", **options
        )
        made.append(transport)
        transport.connect()
        transport.start_consuming()
        return transport

    yield make
    for transport in made:
        transport.close()


def fetch_until(transport: Any, count: int, *, timeout: float = 10.0, limit: int = 10) -> list:
    """Fetch until ``count`` deliveries came, settling nothing."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += transport.fetch(0.1, limit)
    assert len(got) >= count, f"only {len(got)} of {count} deliveries within {timeout}s"
    return got
