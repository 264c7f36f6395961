"""The handler-time histogram, counted by the consumer and read at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer_host.operating.metrics import HostMetrics


class QuietHost:
    name = "shop"

    def status(self):
        return []

    def brokers(self):
        return {}


def samples(metrics: HostMetrics) -> dict[tuple[str, str, str], float]:
    text = generate_latest(metrics.registry).decode()
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "consumer_host_handler_seconds"
    )
    return {
        (s.name, s.labels["worker_instance"], s.labels.get("le", "")): s.value
        for s in family.samples
    }


def test_times_land_in_cumulative_buckets_with_their_sum_and_count():
    metrics = HostMetrics(QuietHost(), "0")
    observe = metrics.handler_timer("orders", "orders-1")
    for seconds in (0.001, 0.002, 0.2, 400.0):  # on a bound, between, and above them all
        observe(seconds)
    got = samples(metrics)
    bucket = "consumer_host_handler_seconds_bucket"
    assert got[(bucket, "orders-1", "0.001")] == 1, "a time on a bound counts in its bucket"
    assert got[(bucket, "orders-1", "0.005")] == 2
    assert got[(bucket, "orders-1", "0.1")] == 2
    assert got[(bucket, "orders-1", "0.25")] == 3
    assert got[(bucket, "orders-1", "300.0")] == 3
    assert got[(bucket, "orders-1", "+Inf")] == 4
    assert got[("consumer_host_handler_seconds_count", "orders-1", "")] == 4
    assert abs(got[("consumer_host_handler_seconds_sum", "orders-1", "")] - 400.203) < 1e-9


def test_a_restarted_instance_keeps_counting_where_it_was_and_others_apart():
    metrics = HostMetrics(QuietHost(), "0")
    metrics.handler_timer("orders", "orders-1")(0.01)
    metrics.handler_timer("orders", "orders-1")(0.01)  # the instance's loop restarted
    metrics.handler_timer("orders", "orders-2")(0.01)
    got = samples(metrics)
    assert got[("consumer_host_handler_seconds_count", "orders-1", "")] == 2
    assert got[("consumer_host_handler_seconds_count", "orders-2", "")] == 1
