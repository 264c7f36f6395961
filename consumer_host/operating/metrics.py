"""Prometheus metrics, read from the host's own counters when scraped.

Counting stays on the hot path as plain integer increments in each consumer; the collectors turn
them into metric families at scrape time, so a message costs no metric call. Handler times too
are counted into histogram buckets by the consumer (:class:`HandlerTimes`): prometheus_client's
``Histogram.observe`` took two locks per message, the largest metric cost of the no-op path.
Labels are bounded: instance names, queue names, states, never message ids.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from consumer_host.consuming.killswitch import SwitchState
from consumer_host.supervision.breaker import BreakerState
from consumer_host.supervision.supervisor import InstanceState

OUTCOMES = ("acked", "retried", "dead_lettered", "rejected_bad_input")
HANDLER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class HostView(Protocol):
    """What the metrics and the health server read from a host."""

    name: str

    def status(self) -> list[dict[str, Any]]: ...

    def brokers(self) -> dict[str, str]: ...


#: Every instance-level family carries both: the registered name, and the instance
#: (``orders-2``). Not ``instance``: Prometheus gives that label to the scrape target and would
#: rename ours to ``exported_instance``.
INSTANCE_LABELS = ["worker", "worker_instance"]


class HostMetrics:
    """A registry of the host's metrics (one per host, so several hosts never collide)."""

    def __init__(self, host: HostView, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_HostCollector(host, version))
        self._handler_times: dict[tuple[str, str], HandlerTimes] = {}
        self.registry.register(_HandlerTimesCollector(self._handler_times))

    def handler_timer(self, worker: str, instance: str) -> Callable[[float], None]:
        """``observe(seconds)`` for one instance (the same counts across its restarts)."""
        times = self._handler_times.setdefault((worker, instance), HandlerTimes())
        return times.observe


#: The ``le`` labels of the buckets, as prometheus_client writes them ("0.001", "1.0", "+Inf").
_BUCKET_LABELS = tuple(
    floatToGoString(bound)  # type: ignore[no-untyped-call]
    for bound in (*HANDLER_BUCKETS, float("inf"))
)


class HandlerTimes:
    """One instance's handler times, as counts per histogram bucket and their sum.

    Observed by the instance's connection thread only (every settlement happens there), so
    plain additions suffice; a scrape reads a copy of the counts.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HANDLER_BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a time equal to a bound counts in that bucket (Prometheus' ``le``).
        self.counts[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.total += seconds


class _HandlerTimesCollector(Collector):
    def __init__(self, times: dict[tuple[str, str], HandlerTimes]) -> None:
        self._times = times

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily(
            "consumer_host_handler_seconds",
            "Time spent in message handlers.",
            labels=INSTANCE_LABELS,
        )
        for (worker, instance), times in list(self._times.items()):
            counts, total = list(times.counts), times.total
            buckets, running = [], 0
            for label, count in zip(_BUCKET_LABELS, counts, strict=True):
                running += count
                buckets.append((label, running))
            family.add_metric([worker, instance], buckets, total)
        yield family


class _HostCollector(Collector):
    def __init__(self, host: HostView, version: str) -> None:
        self._host = host
        self._version = version

    def collect(self) -> Iterator[Any]:
        records = self._host.status()
        messages = CounterMetricFamily(
            "consumer_host_messages",
            "Messages settled, by outcome.",
            labels=[*INSTANCE_LABELS, "queue", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "consumer_host_in_flight", "Messages being handled now.", labels=INSTANCE_LABELS
        )
        stuck = GaugeMetricFamily(
            "consumer_host_stuck_handlers",
            "Handlers running longer than stuck_after.",
            labels=INSTANCE_LABELS,
        )
        paused = GaugeMetricFamily(
            "consumer_host_paused",
            "1 while the instance is paused (or quiet).",
            labels=INSTANCE_LABELS,
        )
        switch = GaugeMetricFamily(
            "consumer_host_kill_switch_state",
            "1 for the state each instance's kill switch is in.",
            labels=[*INSTANCE_LABELS, "state"],
        )
        restarts = CounterMetricFamily(
            "consumer_host_worker_restarts",
            "Restarts after a loop failure.",
            labels=INSTANCE_LABELS,
        )
        reconnects = CounterMetricFamily(
            "consumer_host_broker_reconnects",
            "Reconnections to the broker.",
            labels=[*INSTANCE_LABELS, "queue"],
        )
        state = GaugeMetricFamily(
            "consumer_host_worker_state",
            "1 for the state each instance is in.",
            labels=[*INSTANCE_LABELS, "state"],
        )
        for record in records:
            ids = [record["worker"], record["instance"]]
            restarts.add_metric(ids, record["restarts"])
            for name in InstanceState:
                state.add_metric([*ids, name.value], 1.0 if record["state"] == name else 0.0)
            if "queue" not in record:
                continue
            queue = record["queue"]
            for outcome in OUTCOMES:
                messages.add_metric([*ids, queue, outcome], record["outcomes"][outcome])
            in_flight.add_metric(ids, record["in_flight"])
            stuck.add_metric(ids, len(record.get("stuck") or ()))
            paused.add_metric(ids, 1.0 if record.get("paused") else 0.0)
            if record.get("kill_switch") is not None:
                for switch_state in SwitchState:
                    value = 1.0 if record["kill_switch"] == switch_state else 0.0
                    switch.add_metric([*ids, switch_state.value], value)
            reconnects.add_metric([*ids, queue], record["reconnects"])
        circuits = GaugeMetricFamily(
            "consumer_host_broker_circuit_state",
            "1 for the state of each broker circuit.",
            labels=["broker", "state"],
        )
        for broker, current in self._host.brokers().items():
            for breaker_state in BreakerState:
                value = 1.0 if current == breaker_state else 0.0
                circuits.add_metric([broker, breaker_state.value], value)
        build = GaugeMetricFamily(
            "consumer_host_build_info",
            "The running consumer-host version.",
            labels=["version", "host"],
        )
        build.add_metric([self._version, self._host.name], 1.0)
        yield from (messages, in_flight, stuck, paused, switch, restarts, reconnects, state)
        yield from (circuits, build)
