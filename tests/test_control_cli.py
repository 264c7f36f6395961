"""Run-time control of a running `consumer-host run`: the token, pause/resume/quiet through the
real commands, SIGTSTP, and quiet + SIGTERM leaving the queue intact."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .brokers import AMQP_URL, unique_queue
from .helpers import cli, wait_until
from .test_cli import APPS, free_port, start, wait_for_line

TOKEN = "s3cret-control-token"  # noqa: S105 - a test's own token


def post(port: int, path: str, token: str | None) -> int:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as response:
        return json.loads(response.read())


def handled(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [json.loads(line)["n"] for line in log.read_text().splitlines()]


@pytest.fixture
def running(amqp_broker, tmp_path):
    """A `consumer-host run` of the orders app with a health port; yields a small handle."""
    processes = []

    def launch(*, token: str | None = TOKEN):
        queue = unique_queue()
        amqp_broker.queues.add(queue)
        port = free_port()
        log = tmp_path / f"{queue}.log"
        env = {
            "CONSUMER_HOST_BROKER_URL": AMQP_URL,
            "ORDERS_QUEUE": queue,
            "ORDERS_LOG": str(log),
            "CONSUMER_HOST_HEALTH_PORT": str(port),
            "CONSUMER_HOST_HEALTH_HOST": "127.0.0.1",
        }
        if token is not None:
            env["CONSUMER_HOST_CONTROL_TOKEN"] = token
        process = start("run", str(APPS / "orders_app.py"), env=env)
        processes.append(process)
        wait_for_line(process, "consumer_connected")
        wait_until(lambda: all(r["connected"] for r in status(port)["instances"]), timeout=10)
        return process, queue, port, log

    yield launch
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_without_a_token_the_control_endpoints_are_off(running):
    process, _, port, _ = running(token=None)
    assert post(port, "/quiet", TOKEN) == 404
    assert post(port, "/consumers/orders/pause", TOKEN) == 404
    assert status(port)["ready"]


def test_a_wrong_or_missing_token_is_401_and_changes_nothing(running):
    process, _, port, _ = running()
    assert post(port, "/quiet", "not-the-token") == 401
    assert post(port, "/quiet", None) == 401
    assert post(port, "/consumers/orders/pause", "Bearer") == 401
    assert status(port)["ready"]
    assert not any(r["paused"] for r in status(port)["instances"])


def test_pause_and_resume_through_the_command_handle_each_message_once(running, amqp_broker):
    process, queue, port, log = running()
    url = f"http://127.0.0.1:{port}"
    env = {"CONSUMER_HOST_CONTROL_TOKEN": TOKEN}
    paused = cli("pause", "orders", "--url", url, env=env)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "paused orders-1, orders-2"
    amqp_broker.publish_many(queue, [{"n": n} for n in range(30)])
    wait_until(lambda: amqp_broker.depth(queue) == 30, timeout=10)
    assert handled(log) == []
    rows = status(port)["instances"]
    assert all(r["paused"] for r in rows)
    shown = cli("status", "--url", url)
    assert "paused" in shown.stdout
    resumed = cli("resume", "orders", "--url", url, env=env)
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: len(handled(log)) >= 30, timeout=20)
    assert sorted(handled(log)) == list(range(30))
    wrong = cli("pause", "orders", "--url", url, env={"CONSUMER_HOST_CONTROL_TOKEN": "nope"})
    assert wrong.returncode == 2
    assert "401" in wrong.stderr
    assert TOKEN not in wrong.stderr + wrong.stdout
    unknown = cli("pause", "ordres", "--url", url, env=env)
    assert unknown.returncode == 2


def test_quiet_then_sigterm_exits_0_with_the_queued_messages_intact(running, amqp_broker):
    process, queue, port, log = running()
    quiet = cli(
        "quiet", "--url", f"http://127.0.0.1:{port}", env={"CONSUMER_HOST_CONTROL_TOKEN": TOKEN}
    )
    assert quiet.returncode == 0, quiet.stderr
    wait_until(lambda: not status(port)["ready"], timeout=5)
    amqp_broker.publish_many(queue, [{"n": n} for n in range(20)])
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert handled(log) == []
    assert amqp_broker.depth(queue) == 20
    assert TOKEN not in out + err


def test_sigtstp_quiets_the_host(running):
    process, _, port, _ = running()
    process.send_signal(signal.SIGTSTP)
    wait_until(lambda: not status(port)["ready"], timeout=5)
    assert status(port)["ready"] is False
    assert all(r["paused"] for r in status(port)["instances"])
    assert process.poll() is None  # quiet, not suspended or stopped
