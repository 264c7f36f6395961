"""Pause and quiet are the host's, not one child's: under ``--processes`` a child that is
SIGKILLed, recycled or reloaded comes back paused/quiet and handles nothing (RabbitMQ, Streams).

The real CLI: ``consumer-host run --processes``, ``pause``/``quiet``/``resume`` over HTTP with the
control token, messages counted through the processes app's ledger.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from consumer_host.processes.intent import INTENT_ENV, IntentApplier, OperatorIntent, read_intent
from consumer_host.supervision.events import HostStarted

from .brokers import AMQP_URL, STREAMS_URL, broker_tool, unique_queue
from .helpers import cli, wait_until
from .parents import APP, Parent, get, ledger_ids, publish

TOKEN = "intent-test-token"  # noqa: S105 - a test's own control token


@pytest.fixture(params=["amqp", "streams"])
def tool(request):
    yield from broker_tool(request.param)


def env_for(tool, queue: str, ledger: Path, **extra: str) -> dict[str, str]:
    return {
        "CONSUMER_HOST_BROKER_URL": AMQP_URL if tool.kind == "amqp" else STREAMS_URL,
        "CONSUMER_HOST_CONTROL_TOKEN": TOKEN,
        "PROCESSES_TEST_QUEUE": queue,
        "PROCESSES_TEST_LEDGER": str(ledger),
        **{f"PROCESSES_TEST_{key}": value for key, value in extra.items()},
    }


def control(port: int, *args: str) -> None:
    result = cli(
        *args, "--url", f"http://127.0.0.1:{port}", env={"CONSUMER_HOST_CONTROL_TOKEN": TOKEN}
    )
    assert result.returncode == 0, result.stdout + result.stderr


def status(port: int) -> dict:
    return json.loads(get(port, "/status")[1] or "{}")


def child(port: int, index: int) -> dict:
    for record in status(port).get("processes", ()):
        if record["process"] == index:
            return record
    return {}


def instances_of(port: int, index: int) -> list[dict]:
    return [i for i in status(port).get("instances", ()) if i.get("process") == index]


def fresh_child(port: int, index: int, not_pid: int) -> bool:
    record = child(port, index)
    return record.get("pid") not in (None, not_pid) and bool(instances_of(port, index))


def assert_nothing_handled_for(ledger: Path, seconds: float) -> None:
    before = ledger_ids(ledger, "begin")
    time.sleep(seconds)  # a window in which a wrongly unpaused child would take messages
    assert ledger_ids(ledger, "begin") == before, "a paused host handled messages"


def test_pause_survives_a_sigkilled_child(tool, parents, tmp_path):
    queue, ledger = unique_queue("intent"), tmp_path / "ledger"
    parent = Parent(
        str(APP), "--processes", "2", "--health-port", "0", env=env_for(tool, queue, ledger)
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    control(port, "pause", "work")
    victim = child(port, 1)["pid"]

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: fresh_child(port, 1, victim), 30, "a fresh process 1")
    assert all(i["paused"] for i in instances_of(port, 1)), status(port)
    published = publish(tool, queue, 20)
    assert_nothing_handled_for(ledger, 3)

    control(port, "resume", "work")
    wait_until(lambda: ledger_ids(ledger, "done") == published, 30, "every message after resume")
    assert parent.stop() == 0, parent.output


def test_quiet_survives_a_sigkilled_child(tool, parents, tmp_path):
    queue, ledger = unique_queue("intent"), tmp_path / "ledger"
    parent = Parent(
        str(APP), "--processes", "2", "--health-port", "0", env=env_for(tool, queue, ledger)
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    control(port, "quiet")
    victim = child(port, 2)["pid"]

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: fresh_child(port, 2, victim), 30, "a fresh process 2")
    assert status(port)["quiet"] is True
    assert get(port, "/readyz")[0] == 503
    assert all(i["paused"] for i in instances_of(port, 2)), status(port)
    publish(tool, queue, 20)
    assert_nothing_handled_for(ledger, 3)
    assert parent.stop() == 0, parent.output


def test_pause_survives_a_recycle(tool, parents, tmp_path):
    queue, ledger = unique_queue("intent"), tmp_path / "ledger"
    parent = Parent(
        str(APP),
        "--max-messages-per-process",
        "1",
        "--health-port",
        "0",
        env=env_for(tool, queue, ledger, HANDLE_SECONDS="1.5"),
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    published = publish(tool, queue, 20)
    wait_until(lambda: ledger_ids(ledger, "begin"), 20, "the first message begun")
    control(port, "pause", "work")  # the one in hand finishes: the limit is crossed, paused
    wait_until(lambda: parent.events("process_recycled"), 20, "the recycle")
    wait_until(lambda: len(parent.events("host_started", process=1)) >= 2, 20, "a fresh child")
    wait_until(lambda: bool(instances_of(port, 1)), 20, "the fresh child's status")
    assert all(i["paused"] for i in instances_of(port, 1)), status(port)
    assert_nothing_handled_for(ledger, 3)

    control(port, "resume", "work")
    wait_until(lambda: len(ledger_ids(ledger, "begin")) > 1, 20, "work after resume")
    assert parent.stop() == 0, parent.output
    assert ledger_ids(ledger, "done") <= published


def test_pause_survives_a_reload(tool, parents, tmp_path):
    queue, ledger = unique_queue("intent"), tmp_path / "ledger"
    app = tmp_path / "app.py"
    shutil.copy(APP, app)
    parent = Parent(
        str(app), "--reload", "--health-port", "0", env=env_for(tool, queue, ledger), cwd=tmp_path
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    wait_until(lambda: parent.events("reload_watching"), 10, "the watcher")
    control(port, "pause", "work")
    for _attempt in range(3):  # the watcher may still be arming itself: change again if unseen
        app.write_text(app.read_text() + "\n# changed\n")
        give_up = time.monotonic() + 5
        while not parent.events("process_recycled") and time.monotonic() < give_up:
            time.sleep(0.05)
        if parent.events("process_recycled"):
            break
    wait_until(lambda: len(parent.events("host_started", process=1)) >= 2, 20, "the reload")
    wait_until(lambda: bool(instances_of(port, 1)), 20, "the reloaded child's status")
    assert all(i["paused"] for i in instances_of(port, 1)), status(port)
    publish(tool, queue, 10)
    assert_nothing_handled_for(ledger, 3)
    assert parent.stop() == 0, parent.output


# -- the pieces, without processes ------------------------------------------------------------


def test_the_intent_a_child_is_spawned_with_round_trips():
    intent = OperatorIntent()
    intent.pause("b")
    intent.pause("a")
    intent.resume("b")
    version, env = intent.to_env()
    assert version == 3
    assert read_intent(env) == (frozenset({"a"}), False)
    intent.quiet()
    assert read_intent(intent.to_env()[1]) == (frozenset({"a"}), True)
    assert read_intent({INTENT_ENV: "not json"}) == (frozenset(), False)
    assert read_intent({}) == (frozenset(), False)


def test_a_child_behind_the_intent_is_told_all_of_it():
    intent = OperatorIntent()
    intent.pause("a")
    calls: list[str] = []
    assert intent.sync(1, lambda _port, path: calls.append(path) or {}, ["a", "b"])
    assert calls == ["/consumers/a/pause", "/consumers/b/resume"]
    intent.quiet()
    calls.clear()
    assert not intent.sync(1, lambda _port, path: calls.append(path) and None, ["a", "b"])
    assert calls == ["/consumers/a/pause"]  # stops at the first call not taken


def test_the_applier_pauses_before_any_consumer_starts():
    class Host:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def pause(self, name: str, *, wait: float) -> list[str]:
            self.calls.append(f"pause {name} {wait}")
            return []

        def quiet(self, *, wait: float) -> None:
            self.calls.append(f"quiet {wait}")

    host = Host()
    _, env = OperatorIntent().to_env()
    IntentApplier(host, env)(HostStarted(host="h", instances=()))
    assert host.calls == []
    intent = OperatorIntent()
    intent.pause("work")
    IntentApplier(host, intent.to_env()[1])(HostStarted(host="h", instances=()))
    assert host.calls == ["pause work 0"]
