"""The health server on an ephemeral port: liveness, readiness, metrics, status, and the
``status`` and ``health`` commands that read it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer_host import BrokerCircuitOptions, Host
from consumer_host.broker import BrokerChoice
from consumer_host.testing import FakeClock

from .brokers import BrokerTool, unique_queue
from .helpers import cli, wait_until
from .test_reconnect import drop_connections


def get(host: Host, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{host.health_server_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def memory_host(name="shop", **kwargs) -> Host:
    host = Host(name, health_port=0, health_host="127.0.0.1", **kwargs)
    host.use_broker(BrokerChoice("memory://", "test"))
    return host


class TestLiveness:
    def test_a_stuck_handler_turns_healthz_503_and_back_to_200(self):
        clock = FakeClock()
        host = memory_host(clock=clock)
        queue = unique_queue()
        release = threading.Event()
        entered = threading.Event()

        @host.consumer("orders", queue=queue, liveness_timeout=60)
        def handle(message):
            entered.set()
            release.wait(10)

        tool = BrokerTool("memory")
        host.start()
        try:
            wait_until(lambda: get(host, "/healthz")[0] == 200)
            tool.publish(queue, {"n": 1})
            assert entered.wait(10)
            assert get(host, "/healthz")[0] == 200, "busy for 0 s is not stuck"
            clock.advance(61)
            code, body = get(host, "/healthz")
            assert code == 503
            assert json.loads(body)["stuck"] == ["orders"]
            release.set()
            wait_until(lambda: get(host, "/healthz")[0] == 200, what="healthy again")
        finally:
            release.set()
            host.stop(10)
            tool.close()

    def test_a_broker_outage_does_not_fail_liveness_but_fails_readiness(self):
        host = Host("shop", health_port=0, health_host="127.0.0.1")
        host.use_broker(BrokerChoice("amqp://guest:guest@127.0.0.1:1//", "test"))
        host.consumer("orders", queue=unique_queue())(lambda m: None)
        host.start()
        try:
            wait_until(lambda: host.status()[0]["state"] == "running")
            assert get(host, "/healthz")[0] == 200
            code, body = get(host, "/readyz")
            assert code == 503
            assert json.loads(body)["reason"] == "not consuming"
        finally:
            host.stop(10)


class TestReadiness:
    def test_not_ready_before_start_ready_when_consuming_not_ready_while_draining(self):
        host = memory_host()
        release = threading.Event()
        entered = threading.Event()
        queue = unique_queue()

        @host.consumer("orders", queue=queue)
        def handle(message):
            entered.set()
            release.wait(10)

        assert host.readiness() == (False, {"reason": "not started"})
        tool = BrokerTool("memory")
        host.start()
        try:
            wait_until(lambda: get(host, "/readyz")[0] == 200, what="ready")
            tool.publish(queue, {"n": 1})
            assert entered.wait(10)
            stopper = threading.Thread(target=host.stop, args=(10,))
            stopper.start()
            wait_until(lambda: host.stopping)
            code, body = get(host, "/readyz")
            assert code == 503
            assert json.loads(body)["reason"] == "draining"
            release.set()
            stopper.join(10)
        finally:
            release.set()
            host.stop(10)
            tool.close()

    def test_readiness_follows_a_real_broker_outage(self, real_broker):
        host = Host(
            "shop",
            health_port=0,
            health_host="127.0.0.1",
            broker_circuit=BrokerCircuitOptions(threshold=1, window=60, cooldown=3),
        )
        host.use_broker(BrokerChoice(real_broker.url, "test"))
        host.consumer("orders", queue=unique_queue())(lambda m: None)
        host.start()
        try:
            wait_until(lambda: get(host, "/readyz")[0] == 200, what="ready")
            # Wait while blocked in a fetch, so the drop surfaces on Redis as well.
            drop_connections(real_broker.kind)
            wait_until(lambda: get(host, "/readyz")[0] == 503, timeout=5, what="not ready")
            assert get(host, "/healthz")[0] == 200
            wait_until(lambda: get(host, "/readyz")[0] == 200, timeout=15, what="ready again")
        finally:
            host.stop(10)


class TestMetricsAndStatus:
    def test_metrics_parse_and_count_what_was_processed(self):
        host = memory_host()
        queue = unique_queue()
        tool = BrokerTool("memory")
        tool.publish_many(queue, [{"n": n} for n in range(20)])
        tool.publish_raw(queue, b"{bad", "application/json")

        @host.consumer("orders", queue=queue, pool=2, max_retries=1, retry_backoff_min=0.01)
        def handle(message):
            if message.body["n"] == 7:
                raise ValueError("seven")

        host.start()
        try:
            wait_until(
                lambda: (
                    sum(r["acked"] for r in host.status()) == 19
                    and sum(r["dead_lettered"] for r in host.status()) == 2
                ),
                what="all settled",
            )
            code, text = get(host, "/metrics")
        finally:
            host.stop(10)
            tool.close()
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        totals: dict[str, float] = {}
        for sample in families["consumer_host_messages"].samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels["outcome"]
                totals[outcome] = totals.get(outcome, 0) + sample.value
        assert totals == {"acked": 19, "retried": 1, "dead_lettered": 1, "rejected_bad_input": 1}
        handled = [
            s
            for s in families["consumer_host_handler_seconds"].samples
            if s.name.endswith("_count")
        ]
        assert sum(s.value for s in handled) == 21  # 19 acks + 2 failed attempts of n=7
        states = [s for s in families["consumer_host_worker_state"].samples if s.value == 1]
        assert {(s.labels["worker"], s.labels["state"]) for s in states} == {
            ("orders-1", "running"),
            ("orders-2", "running"),
        }
        assert "consumer_host_build_info" in families
        assert "consumer_host_worker_restarts" in families
        assert "consumer_host_broker_circuit_state" in families
        labels = {k for f in families.values() for s in f.samples for k in s.labels}
        assert labels <= {"worker", "queue", "outcome", "state", "broker", "version", "host", "le"}

    def test_status_matches_host_status(self):
        host = memory_host()
        host.consumer("orders", queue=unique_queue(), pool=2)(lambda m: None)
        host.worker("beat")(lambda stop: stop.wait())
        host.start()
        try:
            wait_until(lambda: all(r["state"] == "running" for r in host.status()))
            code, body = get(host, "/status")
            document = json.loads(body)
            assert code == 200
            assert document["instances"] == json.loads(json.dumps(host.status()))
            assert document["brokers"] == {"memory://": "closed"}
            assert document["host"] == "shop"
            assert document["uptime"] >= 0
        finally:
            host.stop(10)

    def test_only_get_is_served(self):
        host = memory_host()
        host.start()
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{host.health_server_port}/status", method="POST", data=b""
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 405
            assert get(host, "/nothing")[0] == 404
        finally:
            host.stop(10)

    def test_the_server_stops_with_the_host(self):
        host = memory_host()
        host.start()
        port = host.health_server_port
        assert get(host, "/healthz")[0] == 200
        host.stop(10)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            raise AssertionError("still serving after stop")
        except urllib.error.URLError:
            pass
        assert not [t for t in threading.enumerate() if t.name == "consumer-host-health"]


class TestCommands:
    def test_status_renders_a_table_and_json(self):
        host = memory_host()
        host.consumer("orders", queue=unique_queue(), pool=2)(lambda m: None)
        host.start()
        try:
            wait_until(lambda: host.readiness()[0])
            url = f"http://127.0.0.1:{host.health_server_port}"
            table = cli("status", "--url", url)
            assert table.returncode == 0, table.stderr
            lines = table.stdout.splitlines()
            assert lines[0].startswith("shop")
            assert lines[1].split()[:3] == ["INSTANCE", "STATE", "RESTARTS"]
            assert lines[2].split()[:2] == ["orders-1", "running"]
            assert any(line.startswith("broker memory://: circuit closed") for line in lines)
            as_json = cli("status", "--url", url, "--json")
            assert [r["name"] for r in json.loads(as_json.stdout)["instances"]] == [
                "orders-1",
                "orders-2",
            ]
        finally:
            host.stop(10)

    def test_health_exit_codes(self):
        host = Host("shop", health_port=0, health_host="127.0.0.1")
        host.use_broker(BrokerChoice("amqp://guest:guest@127.0.0.1:1//", "test"))
        host.consumer("orders", queue=unique_queue())(lambda m: None)
        host.start()
        try:
            url = f"http://127.0.0.1:{host.health_server_port}"
            live = cli("health", "--url", url)
            assert live.returncode == 0
            ready = cli("health", "--url", url, "--ready")
            assert ready.returncode == 1
            assert ready.stdout.startswith("not ok: /readyz 503")
        finally:
            host.stop(10)
        gone = cli("health", "--url", url)
        assert gone.returncode == 1
        assert "cannot reach" in gone.stderr
