"""``consumer-host run --processes N``, recycling and ``--reload``: the real CLI on RabbitMQ.

Every test that moves messages counts them through the ledger file the app appends to
(tests/apps/processes_app.py): what was published must be handled or still be in the queue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time

from consumer_host.cli.processes import child_args, child_env
from consumer_host.cli.run import run as run_command
from consumer_host.processes.budget import DrainBudget
from consumer_host.processes.child import ChildProcess, ChildSpec, DrainDeadline
from consumer_host.processes.health import merged_status
from consumer_host.processes.parent import ProcessParent
from consumer_host.processes.recycling import RecycleLimits, handled_count, recycle_reason
from consumer_host.testing import FakeClock

from .brokers import unique_queue
from .helpers import cli, wait_until
from .parents import (
    APP,
    APPS,
    Parent,
    alive,
    app_env,
    child_pids,
    get,
    ledger_ids,
    ledger_processes,
    publish,
    remaining_ids,
)

# -- the whole program, on RabbitMQ -----------------------------------------------------------


def test_sigterm_drains_every_child_and_loses_nothing(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("proc"), tmp_path / "ledger"
    published = publish(amqp_broker, queue, 20)
    parent = Parent(
        str(APP),
        "--processes",
        "2",
        "--drain-timeout",
        "10",
        env=app_env(queue, ledger, HANDLE_SECONDS="1"),
    )
    parents.append(parent)
    wait_until(lambda: ledger_processes(ledger) == {"1", "2"}, 20, "both children handling")

    assert parent.stop() == 0, parent.output
    begun, done = ledger_ids(ledger, "begin"), ledger_ids(ledger, "done")
    assert begun == done, "a message in flight at SIGTERM was cut off"
    assert done | remaining_ids(amqp_broker, queue) == published
    assert len(parent.events("host_stopped", exit_code=0)) == 3  # two children, one parent


def test_parent_health_aggregates_the_children(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("proc"), tmp_path / "ledger"
    published = publish(amqp_broker, queue, 10)
    parent = Parent(str(APP), "--processes", "2", "--health-port", "0", env=app_env(queue, ledger))
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 20, "the parent ready")
    wait_until(lambda: ledger_ids(ledger, "done") == published, 20, "every message handled")

    status = json.loads(get(port, "/status")[1])
    assert sorted((i["instance"], i["process"]) for i in status["instances"]) == [
        ("work", 1),
        ("work", 2),
    ]
    assert [p["process"] for p in status["processes"]] == [1, 2]
    assert sum(i["acked"] for i in status["instances"]) == 10
    assert get(port, "/healthz")[0] == 200
    metrics = get(port, "/metrics")[1]
    for index in ("1", "2"):
        assert (
            f'consumer_host_worker_state{{process="{index}",state="running",worker="work",'
            f'worker_instance="work"}} 1.0' in metrics
        )
    acked = re.findall(
        r'consumer_host_messages_total\{outcome="acked",process="\d",queue="[^"]+",'
        r'worker="work",worker_instance="work"\} (\S+)',
        metrics,
    )
    assert sum(float(v) for v in acked) == 10
    assert metrics.count("# TYPE consumer_host_messages_total counter") == 1
    table = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert table.stdout.splitlines()[1].split()[:2] == ["PROCESS", "INSTANCE"], table.stdout
    assert parent.stop() == 0, parent.output


def test_a_sigkilled_child_is_replaced(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("proc"), tmp_path / "ledger"
    parent = Parent(str(APP), "--processes", "2", "--health-port", "0", env=app_env(queue, ledger))
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 20, "the parent ready")
    victim = json.loads(get(port, "/status")[1])["processes"][0]["pid"]

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: parent.events("worker_crashed", worker="process-1"), 10, "the crash")

    def replaced() -> bool:
        first = json.loads(get(port, "/status")[1])["processes"][0]
        return first["pid"] not in (None, victim) and first["ready"]

    wait_until(replaced, 20, "a fresh process 1")
    assert get(port, "/readyz")[0] == 200
    published = publish(amqp_broker, queue, 10)
    wait_until(lambda: ledger_ids(ledger, "done") == published, 20, "the replacement consuming")
    assert parent.stop() == 0, parent.output


def test_recycles_by_message_count_and_loses_nothing(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("proc"), tmp_path / "ledger"
    published = publish(amqp_broker, queue, 100)
    parent = Parent(
        str(APP),
        "--processes",
        "2",
        "--max-messages-per-process",
        "20",
        env=app_env(queue, ledger, HANDLE_SECONDS="0.01"),
    )
    parents.append(parent)
    wait_until(lambda: ledger_ids(ledger, "done") == published, 30, "every message handled")
    wait_until(lambda: parent.events("process_recycled"), 10, "a recycle")

    assert parent.stop() == 0, parent.output
    assert remaining_ids(amqp_broker, queue) == set()
    assert "handled" in parent.events("process_recycling")[0]["reason"]
    assert not parent.events("worker_crashed"), "a planned recycle counted as a failure"


def test_recycles_by_memory_and_loses_nothing(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("proc"), tmp_path / "ledger"
    published = publish(amqp_broker, queue, 30)
    parent = Parent(
        str(APP),
        "--max-memory-per-process",
        "1",
        env=app_env(queue, ledger, HANDLE_SECONDS="0.05"),
    )
    parents.append(parent)
    wait_until(lambda: ledger_ids(ledger, "done") == published, 30, "every message handled")
    wait_until(lambda: parent.events("process_recycled"), 10, "a recycle")

    assert parent.stop() == 0, parent.output
    assert remaining_ids(amqp_broker, queue) == set()
    assert "resident memory" in parent.events("process_recycling")[0]["reason"]
    assert len(parent.events("process_started")) >= 2


def test_reload_restarts_the_child_when_a_source_file_changes(parents, tmp_path):
    app = tmp_path / "app.py"
    shutil.copy(APPS / "lifecycle.py", app)
    parent = Parent(str(app), "--reload", env={}, cwd=tmp_path)
    parents.append(parent)

    def child_starts() -> int:
        return len(parent.events("host_started", process=1))

    wait_until(lambda: child_starts() == 1, 20, "the first start")
    wait_until(lambda: parent.events("reload_watching"), 10, "the watcher")
    for _attempt in range(3):  # the watcher may still be arming itself: change again if unseen
        app.write_text(app.read_text() + "\n# changed\n")
        give_up = time.monotonic() + 4
        while child_starts() < 2 and time.monotonic() < give_up:
            time.sleep(0.05)
        if child_starts() >= 2:
            break
    assert child_starts() >= 2, parent.output
    assert parent.events("process_recycled")
    assert parent.stop() == 0, parent.output


def test_a_second_signal_kills_every_child_and_exits_128_plus_n(parents):
    parent = Parent(
        str(APPS / "lifecycle.py"),
        "--processes",
        "2",
        env={"CONSUMER_HOST_TEST_MODE": "slow-drain"},
    )
    parents.append(parent)
    pids = child_pids(parent, 2)
    parent.process.send_signal(signal.SIGTERM)
    wait_until(lambda: len(parent.events("host_stopping")) == 3, 10, "every host draining")
    parent.process.send_signal(signal.SIGINT)
    assert parent.process.wait(10) == 130
    wait_until(lambda: not any(alive(pid) for pid in pids), 5, "the children killed")


def test_a_drain_past_the_deadline_exits_3(parents):
    parent = Parent(
        str(APPS / "lifecycle.py"),
        "--processes",
        "2",
        "--drain-timeout",
        "1",
        env={"CONSUMER_HOST_TEST_MODE": "slow-drain"},
    )
    parents.append(parent)
    child_pids(parent, 2)
    assert parent.stop() == 3, parent.output


def test_one_drain_timeout_the_children_drain_for_their_share_of_it(parents):
    """The parent and its children log the same drain_timeout (the whole stop); each child
    drains for its share, and the parent's own stop fits the rest."""
    parent = Parent(
        str(APPS / "lifecycle.py"),
        "--processes",
        "2",
        "--drain-timeout",
        "4",
        env={"CONSUMER_HOST_TEST_MODE": "slow-drain"},
    )
    parents.append(parent)
    child_pids(parent, 2)
    assert parent.stop() == 3, parent.output
    draining = parent.events("host_draining")
    assert {e["drain_timeout"] for e in draining} == {4.0}, draining
    children = [e for e in draining if "process" in e]
    assert len(children) == 2
    assert {e["process_drain_timeout"] for e in children} == {DrainBudget(4).child} == {3.2}
    # Each child ends its own drain at its share (exit 3) or, still running half a margin
    # later, is SIGKILLed: either way it is accounted for.
    killed = {e["process"] for e in parent.events("process_killed")}
    gave_up = {e["process"] for e in parent.events("drain_deadline_passed") if "process" in e}
    assert killed | gave_up == {1, 2}, parent.output
    late = [e for e in parent.events("drain_deadline_passed") if "process" not in e]
    assert late == [], "the parent reaped every child within the drain timeout"


def test_children_drain_by_themselves_when_the_parent_is_sigkilled(parents):
    parent = Parent(str(APPS / "lifecycle.py"), "--processes", "2", env={})
    parents.append(parent)
    pids = child_pids(parent, 2)
    parent.kill()
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the orphans gone")


def test_a_child_that_cannot_load_the_app_ends_the_parent_with_exit_2(parents, tmp_path):
    app = tmp_path / "child_fails.py"
    app.write_text(
        "import os\n"
        "from consumer_host import Host\n"
        "host = Host('t')\n"
        "host.worker('idle')(lambda stop: stop.wait())\n"
        "if os.environ.get('CONSUMER_HOST_PROCESS_INDEX'):\n"
        "    raise RuntimeError('only the children fail')\n"
    )
    parent = Parent(str(app), "--processes", "2", env={})
    parents.append(parent)
    assert parent.process.wait(20) == 2, parent.output
    wait_until(lambda: parent.events("host_stopping"), timeout=5)  # the reader catches up
    assert parent.events("host_stopping")[0]["reason"].endswith("configuration error (exit code 2)")


# -- the parent in-process: supervision of children ------------------------------------------


def test_a_crash_looping_child_trips_and_the_parent_exits_1(tmp_path):
    spec = ChildSpec(
        args=("run", str(APPS / "lifecycle.py"), "--log-format", "json"),
        env={**os.environ, "CONSUMER_HOST_TEST_MODE": "critical"},  # the child exits 1
        port_dir=tmp_path,
    )
    child = ChildProcess(1, spec, deadline=DrainDeadline(5), on_fatal=lambda *_: None)
    # Backoff waits on a fake clock: five crashes take as long as five child start-ups.
    parent = ProcessParent("t", [child], drain_timeout=5, clock=FakeClock(auto_advance=True))
    parent.start()
    assert parent.wait(40)
    assert parent.exit_code == 1
    [record] = parent.status()
    assert record["state"] == "tripped"
    assert "exit code 1" in record["last_error"]


# -- pieces -----------------------------------------------------------------------------------


def test_recycle_reason_by_messages_and_by_memory_after_the_first_message():
    limits = RecycleLimits(max_messages=20, max_memory_mb=100)
    assert recycle_reason(limits, handled=19, rss_mb=50) is None
    assert "20 messages" in recycle_reason(limits, handled=20, rss_mb=50)
    assert recycle_reason(limits, handled=0, rss_mb=500) is None  # a fresh child works first
    assert "resident memory" in recycle_reason(limits, handled=1, rss_mb=500)
    assert recycle_reason(RecycleLimits(), handled=10**6, rss_mb=10**6) is None


def test_handled_counts_acked_retried_and_dead_lettered():
    status = {
        "instances": [
            {"instance": "a", "acked": 3, "retried": 1, "dead_lettered": 1},
            {"instance": "beat"},
        ]
    }
    assert handled_count(status) == 5


def test_one_drain_deadline_for_every_child():
    clock = FakeClock()
    deadline = DrainDeadline(10, clock)
    first = deadline.at()
    clock.advance(3)
    assert deadline.at() == first == 10


def test_a_late_child_is_killed_half_a_margin_after_its_share():
    """It may end its own drain at its share (exit 3, its report logged) without being cut off."""
    assert (DrainBudget(30).child, DrainBudget(30).kill_after) == (28.0, 29.0)
    assert (DrainBudget(4).child, DrainBudget(4).kill_after) == (3.2, 3.6)


def test_a_child_gets_the_users_flags_without_the_parents_own(monkeypatch):
    monkeypatch.setenv("CONSUMER_HOST_LOG_LEVEL", "debug")
    argv = [
        "app.py",
        "--processes",
        "3",
        "--pool",
        "work=2",
        "--drain-timeout",
        "5",
        "--reload",
        "--health-port",
        "8080",
        "--max-memory-per-process",
        "200",
    ]
    with run_command.make_context("run", argv) as ctx:
        args = child_args(ctx)
    assert args == [
        "run",
        "app.py",
        "--drain-timeout",
        "5.0",
        "--pool",
        "work=2",
        "--log-level",
        "debug",
        "--health-port",
        "0",
        "--health-host",
        "127.0.0.1",
    ]
    env = child_env({"CONSUMER_HOST_PROCESSES": "3", "CONSUMER_HOST_BROKER_URL": "x"})
    assert env == {"CONSUMER_HOST_BROKER_URL": "x"}


def test_merged_status_tags_each_instance_with_its_process():
    class Child:
        def __init__(self, index):
            self.index, self.pid, self.port = index, 100 + index, 9000 + index
            self.recycles, self.killed, self.handled, self.rss_mb = index, 0, 5, 12.345

    children = [Child(1), Child(2)]
    statuses = {
        1: {"ready": True, "instances": [{"instance": "a"}], "brokers": {"amqp://h//": "closed"}},
        2: {"ready": False, "instances": [{"instance": "a"}], "brokers": {"amqp://h//": "open"}},
    }
    supervised = [{"instance": "process-1", "state": "running", "restarts": 2}]
    merged = merged_status(children, supervised, statuses)
    assert merged["instances"] == [{"instance": "a", "process": 1}, {"instance": "a", "process": 2}]
    assert merged["brokers"] == {"amqp://h//": "open"}
    first, second = merged["processes"]
    assert first["restarts"] == 2
    assert (first["state"], first["recycles"], first["rss_mb"]) == ("running", 1, 12.3)
    assert (second["ready"], second["state"]) == (False, None)
