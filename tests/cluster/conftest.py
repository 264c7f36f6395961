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


@pytest.fixture(autouse=True)
def _one_cluster_test_at_a_time():
    LOCKS.mkdir(exist_ok=True)
    with (LOCKS / "clusters").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
