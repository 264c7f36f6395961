"""The /status view of one consumer: its state, its counters, its stuck handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .readings import ConsumerReadings


def consumer_status(consumer: ConsumerReadings, stuck: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``/status`` shows of ``consumer``; ``stuck`` lists its stuck handlers."""
    counters = consumer.settlement.counters
    return {
        "queue": consumer.options.queue,
        "connected": consumer.connected,
        # The cluster node the instance is connected to (password masked); None on one node.
        "node": consumer.transport.node,
        "consuming": consumer.consuming,
        "paused": consumer.paused,
        "kill_switch": None if consumer.kill_switch is None else str(consumer.kill_switch.state),
        "concurrency": consumer.options.concurrency,
        "acked": counters.acked,
        "retried": counters.retried,
        "dead_lettered": counters.dead_lettered + counters.rejected,
        "rejected_bad_input": counters.rejected,
        "in_flight": consumer.in_flight,
        "reconnects": consumer.reconnects,
        "deferred": counters.deferred,
        "copies_refused": counters.refused,
        "stuck": stuck,
        "outcomes": {
            "acked": counters.acked,
            "retried": counters.retried,
            "dead_lettered": counters.dead_lettered,
            "rejected_bad_input": counters.rejected,
        },
    }
