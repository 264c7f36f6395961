"""A tripped non-critical instance: a WARNING every minute naming it, or --exit-on-trip."""

from __future__ import annotations

import json
import threading

from structlog.testing import capture_logs

from consumer_host.errors import BrokerRefused
from consumer_host.hosting.tripped import TrippedReminder
from consumer_host.supervision.events import WorkerStarted, WorkerTripped
from consumer_host.testing import FakeClock

from .helpers import cli, wait_until


class StubHost:
    name = "shop"

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stops: list[tuple[str, int]] = []

    def shutdown(self, reason: str, exit_code: int = 0) -> None:
        self.stops.append((reason, exit_code))


def tripped(instance: str, *, critical: bool = False) -> WorkerTripped:
    return WorkerTripped(
        instance=instance,
        worker=instance.rsplit("-", 1)[0],
        error=BrokerRefused("cannot connect to amqp://u:***@h// queue 'orders': ACCESS_REFUSED"),
        failures=5,
        window=60.0,
        critical=critical,
    )


def test_a_warning_names_the_tripped_instances_every_minute_until_the_host_is_done():
    host, clock = StubHost(), FakeClock()
    reminder = TrippedReminder(host, clock)
    reminder(tripped("orders-1"))
    reminder(tripped("vital-1", critical=True))  # the host stops for that one already
    with capture_logs() as logs:
        runner = threading.Thread(target=reminder.run)
        runner.start()
        for count in (1, 2):
            wait_until(lambda c=count: len(clock.waits) >= c, what="the reminder waiting")
            clock.advance(60)
            wait_until(lambda c=count: len(logs) == c, what=f"reminder {count}")
        host.done.set()
        runner.join(5)
    assert not runner.is_alive()
    assert [entry["event"] for entry in logs] == ["instances_still_tripped"] * 2
    assert logs[0]["log_level"] == "warning"
    assert logs[0]["instances"] == ["orders-1"]
    assert "ACCESS_REFUSED" in logs[0]["errors"]["orders-1"]
    assert host.stops == []


def test_a_restarted_instance_is_no_longer_named():
    host = StubHost()
    reminder = TrippedReminder(host, FakeClock())
    reminder(tripped("orders-1"))
    reminder(WorkerStarted(instance="orders-1", worker="orders", attempt=1))
    with capture_logs() as logs:
        reminder.remind()
    assert logs == []


def test_exit_on_trip_stops_the_host_with_exit_code_1():
    host = StubHost()
    TrippedReminder(host, FakeClock(), exit_on_trip=True)(tripped("orders-1"))
    [(reason, code)] = host.stops
    assert code == 1
    assert "orders-1" in reason


APP = """
import threading
from consumer_host import Host

host = Host("shop")


@host.worker("broken", max_restarts=1, backoff_min=0.01, backoff_max=0.02)
def broken(stop: threading.Event) -> None:
    raise RuntimeError("wrong password")


@host.worker("plain")
def plain(stop: threading.Event) -> None:
    stop.wait()
"""


def test_run_exit_on_trip_exits_1_naming_the_instance(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    result = cli("run", str(app), "--exit-on-trip", "--log-format", "json", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    stopping = [r for r in records if r["event"] == "host_stopping"]
    assert "worker 'broken' tripped and --exit-on-trip is set" in stopping[0]["reason"]
    assert "--exit-on-trip" in cli("run", "--help").stdout


def test_exit_on_trip_under_processes_ends_the_parent_with_1(tmp_path):
    """A child that exits 1 on the trip is not restarted: the whole host exits 1."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    result = cli(
        "run", str(app), "--processes", "2", "--exit-on-trip", "--log-format", "json", timeout=90
    )
    assert result.returncode == 1, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    parent_stops = [r for r in records if r["event"] == "host_stopping" and "process" not in r]
    assert "--exit-on-trip is set" in parent_stops[-1]["reason"], parent_stops
