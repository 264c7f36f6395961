"""The host's lifecycle as users and platforms meet it: errors that retrying cannot help, the
readiness of a host with a tripped consumer, what a shutdown says, SIGHUP, threads a handler
leaves behind. Program behaviour is checked on the real ``consumer-host`` command."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import structlog

from consumer_host import BrokerRefused, Host, Permanent
from consumer_host.operating.logs import configure_logging
from consumer_host.supervision.events import WorkerBackingOff, WorkerCrashed, WorkerTripped
from consumer_host.testing import FakeClock
from consumer_host.transports.broker import BrokerChoice

from .brokers import AMQP_URL, REDIS_URL, require, unique_queue
from .helpers import EventLog, cli, wait_until
from .test_cli import start, wait_for_line

APPS = Path(__file__).parent / "apps"
SECRET = "wrong-secret-xyz"  # noqa: S105 - the wrong password the tests must never see


def _redis_url(*, userinfo: str = "", db: int | None = None, streams: bool = False) -> str:
    parts = urlsplit(REDIS_URL)
    scheme = "redis+streams" if streams else parts.scheme
    path = parts.path if db is None else f"/{db}"
    return f"{scheme}://{userinfo}{parts.hostname}:{parts.port or 6379}{path}"


def _amqp_url(*, password: str | None = None, vhost: str | None = None) -> str:
    parts = urlsplit(AMQP_URL)
    user = parts.username or "guest"
    secret = parts.password if password is None else password
    path = parts.path if vhost is None else f"/{vhost}"
    return f"amqp://{user}:{secret}@{parts.hostname}:{parts.port or 5672}{path}"


#: name: (broker kind, URL the broker refuses, text the cause must contain)
REFUSED = {
    "amqp-password": ("amqp", lambda: _amqp_url(password=SECRET), "ACCESS_REFUSED"),
    "amqp-vhost": ("amqp", lambda: _amqp_url(vhost="no-such-vhost"), "NOT_ALLOWED"),
    "redis-password": (
        "redis",
        lambda: _redis_url(userinfo=f"nobody:{SECRET}@"),
        "AuthenticationError",
    ),
    "redis-db": ("redis", lambda: _redis_url(db=99), "DB index is out of range"),
    "streams-password": (
        "redis",
        lambda: _redis_url(userinfo=f"nobody:{SECRET}@", streams=True),
        "AuthenticationError",
    ),
    "streams-db": ("redis", lambda: _redis_url(db=99, streams=True), "DB index is out of range"),
}


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class Refusing:
    """A worker the broker refuses, as a consumer is: it says whether it is ready."""

    ready = False

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, stop: threading.Event) -> None:
        raise BrokerRefused("cannot connect to amqp://u:***@h// queue 'q': ACCESS_REFUSED")


class TestPermanentErrors:
    def test_broker_refused_is_permanent(self):
        assert issubclass(BrokerRefused, Permanent)
        assert not hasattr(BrokerRefused("x"), "permanent")

    def test_a_permanent_error_trips_at_once_with_one_line_and_no_traceback(self):
        class Unfixable(Permanent):
            pass

        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        events = EventLog()
        host.subscribe(events)
        host.worker("w")(lambda stop: (_ for _ in ()).throw(Unfixable("the licence expired")))
        with structlog.testing.capture_logs() as logs:
            host.start()
            assert host.wait(5)
        [record] = host.status()
        assert (record["state"], record["restarts"]) == ("tripped", 0)
        assert record["last_error"] == "Unfixable: the licence expired"
        assert clock.waits == [], "no backoff"
        assert not events.of(WorkerCrashed)
        assert not events.of(WorkerBackingOff)
        assert len(events.of(WorkerTripped)) == 1
        errors = [entry for entry in logs if entry["log_level"] == "error"]
        assert [entry["event"] for entry in errors] == ["worker_tripped"]
        assert "exc_info" not in errors[0]
        assert errors[0]["error"] == "Unfixable: the licence expired"

    @pytest.mark.parametrize("case", sorted(REFUSED))
    def test_a_refused_consumer_makes_the_host_unready_naming_the_cause(self, case):
        kind, url, expected = REFUSED[case]
        require(kind)
        host = Host("shop")
        host.use_broker(BrokerChoice(url(), "test"))
        events = EventLog()
        host.subscribe(events)
        host.consumer("orders", queue=unique_queue("lc"))(lambda message: None)
        host.worker("beat")(lambda stop: stop.wait())
        host.start()
        try:
            wait_until(lambda: host.status()[0]["state"] == "tripped", what="orders tripped")
            ready, detail = host.readiness()
            assert not ready
            assert detail["reason"] == "tripped"
            assert detail["instances"] == ["orders"]
            assert expected in detail["causes"]["orders"]
            orders, beat = host.status()
            assert expected in orders["last_error"]
            assert "CircuitBreakerTripped" not in orders["last_error"]
            assert orders["restarts"] == 0
            assert SECRET not in json.dumps(host.status_document())
            assert beat["state"] == "running"
            assert not host.stopping, "a non-critical consumer does not end the host"
            assert not events.of(WorkerCrashed)
        finally:
            host.stop(10)

    def test_a_tripped_plain_worker_leaves_readiness_alone(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        host.worker("flaky", max_restarts=1)(lambda stop: 1 / 0)
        host.worker("beat")(lambda stop: stop.wait())
        host.start()
        try:
            wait_until(lambda: host.status()[0]["state"] == "tripped")
            assert host.readiness() == (True, {})
        finally:
            host.stop(5)

    def test_a_tripped_consumer_like_worker_names_its_cause_in_readiness(self):
        host = Host("shop")
        host.register(Refusing("orders"))
        host.start()
        try:
            wait_until(lambda: host.status()[0]["state"] == "tripped")
            ready, detail = host.readiness()
            assert not ready
            assert detail["causes"] == {
                "orders": "BrokerRefused: cannot connect to amqp://u:***@h// queue 'q': "
                "ACCESS_REFUSED"
            }
        finally:
            host.stop(5)

    @pytest.mark.parametrize("case", sorted(REFUSED))
    def test_the_program_exits_1_at_once_with_the_cause_as_its_last_line(self, case):
        kind, url, expected = REFUSED[case]
        require(kind)
        began = time.monotonic()
        result = cli(
            "run",
            str(APPS / "refused.py"),
            "--broker",
            url(),
            "--log-format",
            "json",
            env={"QUEUE": unique_queue("lc"), "CRITICAL": "1"},
            timeout=60,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert time.monotonic() - began < 15
        output = result.stdout + result.stderr
        assert "Traceback" not in output
        assert SECRET not in output
        lines = json_lines(result.stdout)
        events = [line["event"] for line in lines]
        assert "worker_crashed" not in events
        assert not [line for line in lines if "exception" in line], "no traceback"
        assert "worker_restarting" not in events
        [tripped] = [line for line in lines if line["event"] == "worker_tripped"]
        assert tripped["worker"] == "orders"
        assert expected in tripped["error"]
        last = lines[-1]
        assert (last["event"], last["exit_code"]) == ("host_stopped", 1)
        assert expected in last["reason"]
        assert "stop() called" not in last["reason"]


class StubbornWorker:
    """Holds two messages and ignores its stop until released: a drain that overruns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = threading.Event()
        self.busy = threading.Event()

    def in_flight_ids(self) -> list[str]:
        return ["m-1", "m-2"]

    def run(self, stop: threading.Event) -> None:
        self.busy.set()
        self.release.wait(10)


class TestShutdownReport:
    def test_the_drain_names_its_in_flight_count_deadline_and_abandoned_ids(self):
        worker = StubbornWorker("orders")
        host = Host("shop")
        host.register(worker)
        host.worker("beat")(lambda stop: stop.wait())
        host.start()
        assert worker.busy.wait(5)
        try:
            with structlog.testing.capture_logs() as logs:
                assert host.stop(0.2) == ("orders",)
        finally:
            worker.release.set()
        [draining] = [entry for entry in logs if entry["event"] == "host_draining"]
        assert draining["log_level"] == "info"
        assert draining["in_flight"] == 2
        assert draining["drain_timeout"] == 0.2
        assert draining["deadline"].endswith("+00:00")
        [passed] = [entry for entry in logs if entry["event"] == "drain_deadline_passed"]
        assert passed["abandoned"] == ["m-1", "m-2"]
        assert passed["unstopped"] == ["orders"]

    def test_a_clean_drain_names_no_abandoned_messages(self):
        host = Host("shop")
        host.worker("beat")(lambda stop: stop.wait())
        host.start()
        with structlog.testing.capture_logs() as logs:
            assert host.stop(5) == ()
        assert [entry["in_flight"] for entry in logs if entry["event"] == "host_draining"] == [0]
        assert not [entry for entry in logs if entry["event"] == "drain_deadline_passed"]


class TestSignals:
    def test_sighup_drains_and_exits_0(self):
        process = start("run", str(APPS / "lifecycle.py"), "--drain-timeout", "10")
        wait_for_line(process, "steady running")
        process.send_signal(signal.SIGHUP)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        lines = json_lines(out)
        assert lines[-1]["event"] == "host_stopped"
        assert lines[-1]["reason"] == "SIGHUP received"
        assert any(line["event"] == "host_draining" for line in lines)

    @pytest.mark.parametrize(
        ("first", "second"),
        [(signal.SIGHUP, signal.SIGHUP), (signal.SIGHUP, signal.SIGTERM)],
    )
    def test_a_second_signal_ends_a_slow_drain_at_once(self, first, second):
        process = start(
            "run", str(APPS / "lifecycle.py"), env={"CONSUMER_HOST_TEST_MODE": "slow-drain"}
        )
        wait_for_line(process, "steady running")
        process.send_signal(first)
        wait_for_line(process, "host_draining")
        began = time.monotonic()
        process.send_signal(second)
        process.communicate(timeout=10)
        assert process.returncode == 128 + second
        assert time.monotonic() - began < 5


class TestLeftoverThreads:
    def test_a_handlers_non_daemon_thread_does_not_hold_the_program(self):
        process = start(
            "run",
            str(APPS / "lifecycle.py"),
            "--drain-timeout",
            "5",
            env={"CONSUMER_HOST_TEST_MODE": "leftover-thread"},
        )
        wait_for_line(process, "thread spawned")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=15)
        finally:
            process.kill()
        assert process.returncode == 0, err
        assert time.monotonic() - began < 10
        lines = json_lines(out)
        [stopped] = [line for line in lines if line["event"] == "host_stopped"]
        assert stopped["exit_code"] == 0
        [abandoned] = [line for line in lines if line["event"] == "threads_abandoned"]
        assert abandoned["threads"] == ["users-thread"]

    def test_the_library_run_still_returns_the_code(self):
        leftover = threading.Event()
        host = Host("shop")

        @host.worker("spawner")
        def spawner(stop):
            threading.Thread(target=leftover.wait, name="users-thread", daemon=False).start()
            host.shutdown("done")
            stop.wait()

        try:
            assert host.run(install_signal_handlers=False) == 0
        finally:
            leftover.set()


def log_of_one_dead_letter(broker, handler, *, max_retries: int) -> str:
    """Console log of a host that fails one message until it is dead-lettered."""
    queue = unique_queue("lc")
    out = io.StringIO()
    configure_logging("console", "info", stream=out)
    host = Host("shop")
    host.use_broker(BrokerChoice(broker.url, "test"))
    host.consumer(
        "orders",
        queue=queue,
        max_retries=max_retries,
        retry_backoff_min=0.01,
        retry_backoff_max=0.04,
    )(handler)
    broker.publish(queue, {"n": 1})
    host.start()
    try:
        wait_until(lambda: host.status()[0]["dead_lettered"] == 1, what="dead-lettered")
    finally:
        host.stop(10)
    return out.getvalue()


class TestOneTracebackPerMessage:
    def test_a_message_that_fails_every_attempt_logs_its_traceback_once(self, broker):
        def fail_in_handler(message):
            raise ValueError("no such customer")

        text = log_of_one_dead_letter(broker, fail_in_handler, max_retries=2)
        assert text.count("message_retrying") == 2
        assert text.count("message_dead_lettered") == 1
        assert text.count("Traceback (most recent call last)") == 1
        assert "fail_in_handler" in text

    def test_a_message_dead_lettered_on_its_first_failure_still_logs_it(self, broker):
        text = log_of_one_dead_letter(broker, lambda message: 1 / 0, max_retries=0)
        assert text.count("Traceback (most recent call last)") == 1
        assert "ZeroDivisionError" in text
