"""The pytest plugin consumer-host installs: the ``consumer_harness`` fixture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from consumer_host.host import Host
    from consumer_host.testing.harness import Harness


@pytest.fixture
def consumer_harness() -> Iterator[Callable[..., Harness]]:
    """``consumer_harness(host)``: a :class:`~consumer_host.testing.Harness` for ``host``'s
    registered consumers (keywords as ``Harness``: ``clock=``), closed after the test."""
    from consumer_host.testing.harness import Harness

    made: list[Harness] = []

    def make(host: Host, **options: Any) -> Harness:
        made.append(Harness(host, **options))
        return made[-1]

    yield make
    for harness in reversed(made):
        harness.close()
