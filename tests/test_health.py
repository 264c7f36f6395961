"""The health server on an ephemeral port: liveness, readiness, metrics, status, and the
``status`` and ``health`` commands that read it."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer_host import BrokerCircuitOptions, Host
from consumer_host.operating.health import HealthServer
from consumer_host.testing import FakeClock
from consumer_host.transports.broker import BrokerChoice

from .brokers import BrokerTool, drop_connections, unique_queue
from .helpers import cli, wait_until


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

    @pytest.mark.timeout(300)
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
        assert {
            (s.labels["worker"], s.labels["worker_instance"], s.labels["state"]) for s in states
        } == {("orders", "orders-1", "running"), ("orders", "orders-2", "running")}
        assert "consumer_host_build_info" in families
        assert "consumer_host_worker_restarts" in families
        assert "consumer_host_broker_circuit_state" in families
        labels = {k for f in families.values() for s in f.samples for k in s.labels}
        assert labels <= {
            "worker",
            "worker_instance",
            "queue",
            "outcome",
            "state",
            "broker",
            "version",
            "host",
            "le",
        }

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


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` as it is and read the whole answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def bare_server(**options) -> HealthServer:
    return HealthServer(
        host="127.0.0.1",
        port=0,
        liveness=lambda: (True, {"stuck": []}),
        readiness=lambda: (False, {"reason": "draining"}),
        status=lambda: {"host": "shop"},
        metrics=memory_host().metrics,
        **options,
    )


class TestBounded:
    def test_a_probe_answers_within_a_second_while_500_connections_are_held_open(self):
        host = memory_host()
        host.start()
        held: list[socket.socket] = []
        try:
            port = host.health_server_port
            threads_before = threading.active_count()
            for n in range(500):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if n % 2:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a request that never ends
                held.append(sock)
            began = time.monotonic()
            code, body = get(host, "/healthz")
            assert code == 200, body
            assert time.monotonic() - began < 1
            assert threading.active_count() <= threads_before + 1, "no thread per connection"
            # Past the cap the oldest idle connections were dropped: they read end-of-file.
            with selectors.DefaultSelector() as watch:  # select() stops at fd 1024
                for sock in held:
                    watch.register(sock, selectors.EVENT_READ)
                readable = watch.select(timeout=2)
            assert len(readable) >= 500 - 64
        finally:
            for sock in held:
                sock.close()
            host.stop(10)

    def test_a_silent_connection_is_dropped_after_the_read_timeout(self):
        server = bare_server(read_timeout=0.3)
        server.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                began = time.monotonic()
                assert sock.recv(10) == b"", "closed by the server"
                assert 0.2 < time.monotonic() - began < 3
            wait_until(lambda: server.open_connections == 0, what="connection released")
        finally:
            server.close()

    def test_routes_methods_and_malformed_requests(self):
        server = bare_server()
        server.start()
        try:
            port = server.port
            head = raw_exchange(port, b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert head.endswith(b"\r\n\r\n"), "HEAD has no body"
            assert b"Content-Length: 36" in head
            got = raw_exchange(port, b"GET /readyz?verbose=1 HTTP/1.0\r\n\r\n")
            assert got.split(b"\r\n\r\n", 1)[1] == b'{"ok": false, "reason": "draining"}\n'
            post = raw_exchange(port, b"POST /status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
            assert post.startswith(b"HTTP/1.1 405 ")
            assert b"Allow: GET" in post
            assert raw_exchange(port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
            huge = b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000
            assert raw_exchange(port, huge).startswith(b"HTTP/1.1 431 ")
        finally:
            server.close()

    def test_a_new_route_is_one_add_away(self):
        from consumer_host.operating.health import json_response

        server = bare_server()
        server.router.add("POST", "/control/pause", lambda request: json_response(202, {}))
        server.start()
        try:
            answer = raw_exchange(
                server.port, b"POST /control/pause HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 202 ")
        finally:
            server.close()


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
            assert [r["instance"] for r in json.loads(as_json.stdout)["instances"]] == [
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
