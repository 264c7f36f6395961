from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import structlog

from .brokers import broker_tool
from .parents import Parent


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


#: Lock files shared by every test process of this user (tests/cluster's cluster lock).
LOCKS = Path(tempfile.gettempdir()) / f"consumer-host-tests-{os.getuid()}"


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


@pytest.fixture
def parents():
    """``consumer-host run`` parents a test started; killed at its end if still running."""
    started: list[Parent] = []
    yield started
    for parent in started:
        parent.kill()
