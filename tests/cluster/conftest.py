"""Tests against real broker clusters started on loopback beside the machine's own brokers.

Every test here is marked ``cluster`` and runs in one xdist group: the clusters are shared,
and a test that kills a node must not pull it from under another test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before xdist reads the group into the node ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.xdist_group("clusters"))
