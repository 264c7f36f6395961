from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest
import structlog

from .brokers import broker_tool


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


LOCKS = Path(tempfile.gettempdir()) / f"consumer-host-tests-{os.getuid()}"


@pytest.fixture(autouse=True)
def _broker_sharing(request):
    """Tests run in parallel (pytest-xdist) against one RabbitMQ and one Redis. A test marked
    ``exclusive`` drops every broker connection, so it runs alone: a readers-writer lock over
    all workers (flock), with a turnstile so that a waiting exclusive test is not starved."""
    LOCKS.mkdir(exist_ok=True)
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with (LOCKS / "turnstile").open("a") as turnstile, (LOCKS / "brokers").open("a") as brokers:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(brokers, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(brokers, fcntl.LOCK_UN)


@pytest.fixture(params=["memory", "amqp", "redis", "streams"])
def broker(request):
    """A real broker (RabbitMQ, Redis lists or Streams) or kombu's in-process one."""
    yield from broker_tool(request.param)


@pytest.fixture(params=["amqp", "redis", "streams"])
def real_broker(request):
    """RabbitMQ, Redis lists and Redis Streams: for what kombu's in-process broker cannot show."""
    yield from broker_tool(request.param)


@pytest.fixture
def redis_broker():
    yield from broker_tool("redis")


@pytest.fixture
def amqp_broker():
    yield from broker_tool("amqp")


def pytest_collection_modifyitems(items):
    """Mark every test that runs against RabbitMQ or Redis, so ``-m "not broker"`` leaves them."""
    for item in items:
        if {"redis_broker", "amqp_broker"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        kinds = {callspec.params.get(name) for name in ("broker", "real_broker", "celery_broker")}
        if kinds & {"amqp", "redis", "streams"}:
            item.add_marker(pytest.mark.broker)
