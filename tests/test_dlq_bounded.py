"""A dead-letter walk on Redis (lists and Streams) takes what was there when it began, however
many dead letters arrive meanwhile (a running host dead-lettering its replays again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from consumer_host.transports.dead_letters import Selection

from .brokers import broker_tool, unique_queue
from .test_dlq import bodies, dead_headers, read_back, store_for

START = 7
#: Arrivals stop after this many, so a walk that is not bounded ends (and fails) instead of
#: running for as long as dead letters keep coming.
ARRIVALS = 3 * START


@pytest.fixture(params=["redis", "streams"])
def tool(request):
    yield from broker_tool(request.param)


@dataclass(frozen=True, kw_only=True)
class WhileArriving(Selection):
    """Every dead letter the walk looks at brings a new one in, as a host failing each replayed
    message again would; deterministic where a second thread would race the walk."""

    arrive: Callable[[], None]

    def matches(self, headers: dict[str, Any]) -> bool:
        self.arrive()
        return super().matches(headers)


def filled(tool: Any) -> tuple[str, Callable[[], None]]:
    queue = unique_queue("dlqb")
    tool.queues.add(queue)
    arrived: list[int] = []

    def dead_letter(n: int) -> None:
        tool.publish(f"{queue}.dlq", {"n": n}, headers=dead_headers(queue, "KeyError", n))

    for n in range(START):
        dead_letter(n)

    def arrive() -> None:
        if len(arrived) < ARRIVALS:
            arrived.append(START + len(arrived))
            dead_letter(arrived[-1])

    return queue, arrive


@pytest.mark.parametrize("action", ["replay", "purge"])
def test_a_walk_takes_exactly_what_was_there_when_it_began(tool, action):
    queue, arrive = filled(tool)
    store = store_for(tool, queue)
    try:
        moved = getattr(store, action)(WhileArriving(arrive=arrive))
    finally:
        store.close()
    assert moved == START
    if action == "replay":
        assert bodies(read_back(tool, queue)) == list(range(START))
    left = bodies(read_back(tool, f"{queue}.dlq"))
    assert left == list(range(START, START + len(left)))
    assert left, "dead letters did arrive during the walk"


def test_browsing_lists_what_was_there_when_it_began(tool):
    queue, arrive = filled(tool)
    store = store_for(tool, queue)
    try:
        seen = 0
        for _headers in store.browse():
            arrive()
            seen += 1
    finally:
        store.close()
    assert seen == START
