"""Tests against real broker clusters started on loopback beside the machine's own brokers.

Every test here is marked ``cluster`` and holds one lock over all xdist workers while it runs:
the clusters are shared, and a test that kills a node must not pull it from under another test.
The RabbitMQ cluster tests also share one xdist group (``--dist loadgroup``), so one worker
starts the cluster once and stops it at the end of its session.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import LOCKS

from .rabbitmq import RabbitCluster

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(item.fspath)
        if _HERE in path.parents:
            item.add_marker(pytest.mark.cluster)
        if path.name == "test_rabbitmq_cluster.py":
            item.add_marker(pytest.mark.xdist_group("rabbitmq-cluster"))


@pytest.fixture(autouse=True)
def _one_cluster_test_at_a_time():
    LOCKS.mkdir(exist_ok=True)
    with (LOCKS / "clusters").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def redis_sets():
    """The Sentinel set and the Redis Cluster (scripts/redis-clusters.sh), started when a
    worker's first Redis cluster test needs them and stopped when the last worker using them
    ends its session: a count of users, under a lock over all xdist workers."""
    from tests.cluster.redis_sets import script

    LOCKS.mkdir(exist_ok=True)
    users = LOCKS / "redis-sets-users"
    with _locked(LOCKS / "redis-sets"):
        script("start")
        users.write_text(str(int(users.read_text() or 0) + 1 if users.exists() else 1))
    try:
        yield
    finally:
        with _locked(LOCKS / "redis-sets"):
            left = int(users.read_text() or 1) - 1
            users.write_text(str(left))
            if left <= 0:
                script("stop")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def rabbit_cluster():
    """The 3-node RabbitMQ cluster (scripts/rabbitmq-cluster.sh), started for the session and
    stopped at its end, whatever the tests did to it."""
    cluster = RabbitCluster()
    try:
        cluster.start()
    except (OSError, RuntimeError) as exc:
        cluster.stop()
        pytest.fail(f"cannot start the RabbitMQ cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def rabbit(rabbit_cluster):
    """The cluster with every node up at the start of the test."""
    rabbit_cluster.ensure_all_up()
    return rabbit_cluster
