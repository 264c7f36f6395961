"""The pytest plugin consumer-host installs: the ``consumer_harness`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from consumer_host.host import Host
    from consumer_host.testing.harness import Harness


@pytest.fixture
def consumer_harness() -> Callable[..., Harness]:
    """``consumer_harness(host)``: a :class:`~consumer_host.testing.Harness` for ``host``'s
    registered consumers (keywords as ``Harness``: ``clock=``)."""
    from consumer_host.testing.harness import Harness

    def make(host: Host, **options: Any) -> Harness:
        return Harness(host, **options)

    return make
