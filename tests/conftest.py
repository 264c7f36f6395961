from __future__ import annotations

import pytest
import structlog

from .brokers import BrokerTool, require


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


@pytest.fixture(params=["memory", "amqp", "redis", "streams"])
def broker(request):
    """A real broker (RabbitMQ, Redis) or kombu's in-process one, with cleanup after the test."""
    kind = request.param
    if kind != "memory":
        require("amqp" if kind == "amqp" else "redis")
    tool = BrokerTool(kind)
    yield tool
    tool.close()


@pytest.fixture(params=["amqp", "redis", "streams"])
def real_broker(request):
    """RabbitMQ, Redis lists and Redis Streams: for what kombu's in-process broker cannot show."""
    require("amqp" if request.param == "amqp" else "redis")
    tool = BrokerTool(request.param)
    yield tool
    tool.close()


@pytest.fixture
def redis_broker():
    require("redis")
    tool = BrokerTool("redis")
    yield tool
    tool.close()


@pytest.fixture
def amqp_broker():
    require("amqp")
    tool = BrokerTool("amqp")
    yield tool
    tool.close()


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
