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
#: Left by the redis_sets fixture: this run started the Redis sets, so it stops them at its end.
STARTED = LOCKS / "redis-sets-started"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)


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
    """The Sentinel set and the Redis Cluster, started once (idempotent, under a lock over all
    workers). They are stopped when the whole run ends: tests/conftest.py's sessionfinish."""
    from tests.cluster.redis_sets import script

    LOCKS.mkdir(exist_ok=True)
    with (LOCKS / "redis-sets").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            script("start")
            STARTED.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
