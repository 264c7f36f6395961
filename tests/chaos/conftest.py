from __future__ import annotations

import subprocess
import uuid

import pytest
import redis

from tests.brokers import REDIS_URL, require

from .harness import ChaosBroker, HostProcess, Ledger


@pytest.fixture(scope="session")
def canary_users():
    """A RabbitMQ user and a Redis ACL user with one canary password, for every scenario."""
    password = f"CANARY{uuid.uuid4().hex[:16]}"
    user = f"chaos{uuid.uuid4().hex[:6]}"
    made = []
    try:
        if (
            subprocess.run(
                ["rabbitmqctl", "-q", "add_user", user, password],
                capture_output=True,
                timeout=60,
                check=False,
            ).returncode
            == 0
        ):
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", "/", user, ".*", ".*", ".*"],
                capture_output=True,
                timeout=60,
                check=True,
            )
            made.append("amqp")
        redis.Redis.from_url(REDIS_URL).acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{password}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        made.append("redis")
    except (OSError, redis.RedisError):
        pass
    yield user, password
    if "amqp" in made:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False
        )
    if "redis" in made:
        redis.Redis.from_url(REDIS_URL).acl_deluser(user)


@pytest.fixture(params=["amqp", "redis"])
def chaos_broker(request, canary_users):
    require(request.param)
    user, password = canary_users
    broker = ChaosBroker(request.param, user, password)
    yield broker
    broker.cleanup()


@pytest.fixture(params=["amqp", "redis", "streams"])
def any_broker(request, canary_users):
    """RabbitMQ, Redis lists and Redis Streams, for the scenarios that must hold on all three."""
    require(request.param)
    user, password = canary_users
    broker = ChaosBroker(request.param, user, password)
    yield broker
    broker.cleanup()


@pytest.fixture
def ledger():
    book = Ledger()
    yield book
    book.delete()


@pytest.fixture
def hosts(request, ledger, tmp_path):
    """Start hosts with ``hosts(**env)``; all are stopped, and their output is searched for the
    canary password, at the end of the test."""
    started: list[HostProcess] = []
    name = "any_broker" if "any_broker" in request.fixturenames else "chaos_broker"
    chaos_broker = request.getfixturevalue(name)

    def start(**env):
        process = HostProcess(chaos_broker, ledger, tmp_path, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    for process in started:
        assert chaos_broker.password not in process.text(), "the broker password leaked"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.broker)
