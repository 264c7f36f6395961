"""Tests against real broker clusters started on loopback beside the machine's own brokers.

Every test here is marked ``cluster`` and holds one lock over all xdist workers while it runs:
the clusters are shared, and a test that kills a node must not pull it from under another test.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from tests.conftest import LOCKS

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)
        if Path(item.fspath).name in ("test_redis_sentinel.py", "test_redis_cluster.py"):
            item.add_marker(pytest.mark.xdist_group("redis-sets"))


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
    """The Sentinel set and the Redis Cluster (scripts/redis-clusters.sh), started for the
    session and stopped at its end. All Redis cluster tests share one xdist group, so one worker
    runs them all; the start is idempotent and under a lock all the same."""
    from tests.cluster.redis_sets import script

    LOCKS.mkdir(exist_ok=True)
    with (LOCKS / "redis-sets").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            script("start")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        yield
    finally:
        script("stop")
