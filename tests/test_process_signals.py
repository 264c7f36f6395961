"""SIGTSTP under ``--processes``: the parent goes quiet, as a single process does, instead of
being stopped by the kernel while its children go on consuming (hostile run, finding 2).

The real CLI in a subprocess, a RabbitMQ queue of the test's own, messages counted through the
processes app's ledger.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .brokers import AMQP_URL, broker_tool, unique_queue
from .helpers import wait_until
from .parents import APP, Parent, get, ledger_ids, process_state, publish

TOKEN = "tstp-test-token"  # noqa: S105 - a test's own control token


@pytest.fixture
def tool():
    yield from broker_tool("amqp")


def env_for(queue: str, ledger: Path, *, token: bool) -> dict[str, str]:
    return {
        "CONSUMER_HOST_BROKER_URL": AMQP_URL,
        "PROCESSES_TEST_QUEUE": queue,
        "PROCESSES_TEST_LEDGER": str(ledger),
        # The parent passes its environment on: a token in the test's own would reach it.
        "CONSUMER_HOST_CONTROL_TOKEN": TOKEN if token else "",
    }


def status(port: int) -> dict:
    return json.loads(get(port, "/status")[1] or "{}")


def every_child_paused(port: int) -> bool:
    instances = status(port).get("instances", [])
    processes = {i.get("process") for i in instances}
    return processes == {1, 2} and all(i["paused"] for i in instances)


def readyz(port: int) -> tuple[int, str]:
    code, body = get(port, "/readyz")
    return code, json.loads(body or "{}").get("reason", "")


def child_pid(port: int, index: int) -> int:
    return next(p["pid"] for p in status(port)["processes"] if p["process"] == index)


@pytest.mark.parametrize(
    ("token", "target"),
    [(False, "parent"), (True, "parent"), (False, "group"), (False, "child"), (True, "child")],
    ids=["no-token", "token", "process-group", "one-child", "one-child-token"],
)
def test_sigtstp_quiets_every_child_and_sigterm_still_drains(
    tool, parents, tmp_path, token, target
):
    queue, ledger = unique_queue("tstp"), tmp_path / "ledger"
    parent = Parent(
        str(APP),
        "--processes",
        "2",
        "--health-port",
        "0",
        env=env_for(queue, ledger, token=token),
        session=target == "group",
    )
    parents.append(parent)
    port = parent.port()
    wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "the parent ready")
    pid = parent.process.pid

    if target == "group":  # Ctrl-Z in a terminal: the whole foreground process group
        os.killpg(pid, signal.SIGTSTP)
    elif target == "child":  # one child alone: quiet is the host's, every child goes quiet
        wait_until(lambda: len(status(port).get("processes", [])) == 2, 20, "both children")
        os.kill(child_pid(port, 2), signal.SIGTSTP)
    else:
        os.kill(pid, signal.SIGTSTP)

    wait_until(lambda: readyz(port) == (503, "quiet"), 20, "/readyz 503 quiet")
    assert process_state(pid) not in ("T", ""), "the parent was stopped"
    assert status(port)["quiet"] is True
    wait_until(lambda: every_child_paused(port), 20, "every child quiet")
    publish(tool, queue, 10)
    time.sleep(2)  # a window in which a child that is not quiet would take messages
    assert ledger_ids(ledger, "begin") == set(), "a quiet host handled messages"
    assert parent.events("host_quiet"), parent.output

    assert parent.stop() == 0, parent.output
