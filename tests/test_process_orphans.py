"""Children of ``--processes`` and the ends they meet: a SIGKILLed parent, a child killed during
its recycle, a clean exit (the real CLI on RabbitMQ)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .brokers import unique_queue
from .helpers import wait_until
from .parents import APP, APPS, Parent, alive, app_env, child_pids, get, publish


def test_children_are_gone_within_a_second_of_a_sigkilled_parent(parents):
    parent = Parent(str(APPS / "lifecycle.py"), "--processes", "2", env={})
    parents.append(parent)
    pids = child_pids(parent, 2)
    parent.process.kill()
    killed_at = time.monotonic()
    parent.process.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the orphans gone")
    assert time.monotonic() - killed_at < 1.0
    # one SIGTERM each, however many parent threads died: a drain, not a kill
    time.sleep(0.3)  # the reader thread catches up with their last lines
    assert not parent.events("host_killed"), parent.output
    assert len(parent.events("host_stopped", exit_code=0)) == 2, parent.output


def test_a_child_killed_during_its_recycle_counts_as_a_failure(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("orphan"), tmp_path / "ledger"
    parent = Parent(
        str(APP),
        "--max-messages-per-process",
        "1",
        "--health-port",
        "0",
        env=app_env(queue, ledger, HANDLE_SECONDS="3"),
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    publish(amqp_broker, queue, 2)
    # the first message is in its 3 s handler; the limit is crossed when it settles
    wait_until(lambda: parent.events("process_recycling"), 20, "the recycle begun")
    victim = json.loads(get(port, "/status")[1])["processes"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: parent.events("worker_crashed", worker="process-1"), 10, "the failure")
    assert not parent.events("process_recycled"), parent.output
    assert parent.stop() == 0, parent.output


def test_a_clean_child_exit_logs_no_error(amqp_broker, parents, tmp_path):
    queue, ledger = unique_queue("orphan"), tmp_path / "ledger"
    parent = Parent(str(APP), "--processes", "2", "--health-port", "0", env=app_env(queue, ledger))
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    assert parent.stop() == 0, parent.output
    assert not parent.events("event_listener_failed"), parent.output
    records = [json.loads(line) for line in parent.lines if line.startswith("{")]
    assert [r for r in records if r.get("level") == "error"] == [], parent.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_kernel_takes_the_parent_death_signal():
    code = "import os; from consumer_host.processes.orphans import die_with_parent as d; "
    code += "print(d(os.getppid()))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "True"
