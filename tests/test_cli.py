"""The real ``consumer-host`` command, run in subprocesses as users and platforms run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import ClassVar

import pytest

from consumer_host.transports.broker import PLATFORM_VARIABLES, resolve_broker

from .brokers import AMQP_URL, require
from .helpers import COMMAND, cli, wait_until

APPS = Path(__file__).parent / "apps"


def start(*args, cwd=None, env=None):
    return subprocess.Popen(
        [COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def wait_for_line(process, needle, timeout=20):
    """Read stdout until a line contains ``needle``; return what was read."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never appeared; got:\n{''.join(seen)}")


class TestRun:
    def test_sigterm_drains_and_exits_0_within_the_drain_timeout(self):
        process = start("run", str(APPS / "lifecycle.py"), "--drain-timeout", "10")
        wait_for_line(process, "steady running")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        assert time.monotonic() - began < 10
        events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith("{")]
        assert events[-1] == "host_stopped"
        assert "host_stopping" in events

    def test_a_second_sigint_during_a_slow_drain_exits_130_at_once(self):
        process = start(
            "run", str(APPS / "lifecycle.py"), env={"CONSUMER_HOST_TEST_MODE": "slow-drain"}
        )
        wait_for_line(process, "steady running")
        process.send_signal(signal.SIGINT)
        wait_for_line(process, "host_stopping")
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
        assert process.returncode == 130
        assert time.monotonic() - began < 5

    def test_a_lost_critical_worker_exits_1(self):
        result = cli("run", str(APPS / "lifecycle.py"), env={"CONSUMER_HOST_TEST_MODE": "critical"})
        assert result.returncode == 1, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        tripped = [line for line in lines if line["event"] == "worker_tripped"]
        assert tripped[0]["worker"] == "vital"
        assert tripped[0]["critical"] is True
        assert lines[-1]["event"] == "host_stopped"
        assert lines[-1]["exit_code"] == 1

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["run", "no_such_module:host"], "no module named 'no_such_module'"),
            (["run", "tests/apps/missing.py"], "no such file"),
            (["run", "tests/apps/lifecycle.py:nothing"], "has no attribute 'nothing'"),
            (["run", "tests/apps/lifecycle.py:not_a_host"], "not a consumer_host.Host"),
            (["run", "tests/apps/lifecycle.py", "--broker", "ftp://x"], "unknown broker scheme"),
            (["run", "tests/apps/lifecycle.py", "--broker", "amqp://h:99999"], "malformed"),
            (["run", "tests/apps/lifecycle.py", "--pool", "steady"], "--pool expects NAME=N"),
            (["run", "tests/apps/lifecycle.py", "--pool", "ghost=2"], "no worker named 'ghost'"),
            (["run", "tests/apps/lifecycle.py", "--only", "ghost"], "no worker named ghost"),
            (["run", "tests/apps/lifecycle.py", "--drain-timeout", "soon"], "soon"),
            # Non-finite or absurd: accepted, they crashed at SIGTERM with a traceback.
            (["run", "tests/apps/lifecycle.py", "--drain-timeout", "nan"], "not a finite number"),
            (["run", "tests/apps/lifecycle.py", "--drain-timeout", "inf"], "0<=x<=86400"),
            (["run", "tests/apps/lifecycle.py", "--drain-timeout", "1e308"], "0<=x<=86400"),
            (["run", "tests/apps/lifecycle.py", "--drain-timeout", "86401"], "0<=x<=86400"),
            (
                ["run", "tests/apps/lifecycle.py", "--max-memory-per-process", "nan"],
                "not a finite number",
            ),
            (["run", "tests/apps/lifecycle.py", "--max-memory-per-process", "inf"], "finite"),
            (["run", "tests/apps/lifecycle.py", "--log-format", "xml"], "xml"),
            (["run"], "APP is missing"),
            (["frobnicate"], "No such command"),
            (["publish", "q", "{not json"], "BODY is not JSON"),
            (["publish", "q", '{"a": NaN}'], "NaN is not a JSON value"),
            (["publish", "q", "[Infinity]"], "Infinity is not a JSON value"),
            (["publish", "q", "1e999"], "1e999 is too large for a JSON number"),
        ],
    )
    def test_user_mistakes_exit_2_with_one_line(self, args, message):
        result = cli(*args, cwd=Path(__file__).parent.parent)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line != "app imported"]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("consumer-host: error: ")
        assert message in lines[0]
        assert "Traceback" not in result.stderr

    def test_a_bad_line_of_stdin_is_named_as_the_user_counts_lines(self):
        result = cli("publish", "q", "-", input='{"n": 1}\n\n{bad\n')
        assert result.returncode == 2
        assert "line 3 of stdin is not JSON" in result.stderr

    @pytest.mark.parametrize("value", ["nan", "inf", "1e308"])
    def test_a_drain_timeout_from_the_environment_is_checked_the_same(self, value):
        result = cli(
            "run",
            str(APPS / "lifecycle.py"),
            env={"CONSUMER_HOST_DRAIN_TIMEOUT": value},
            cwd=Path(__file__).parent.parent,
        )
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line != "app imported"]
        assert len(lines) == 1, result.stderr
        assert "CONSUMER_HOST_DRAIN_TIMEOUT" in lines[0]

    def test_an_error_inside_the_users_module_shows_their_traceback_and_exits_2(self):
        result = cli(
            "run", str(APPS / "lifecycle.py"), env={"CONSUMER_HOST_TEST_MODE": "import-error"}
        )
        assert result.returncode == 2
        assert "Traceback (most recent call last)" in result.stderr
        assert "lifecycle.py" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("consumer-host: error: ")
        assert "missing setting SHOP_DB" in result.stderr

    def test_version_and_help(self):
        assert cli("--version").stdout.startswith("consumer-host, version ")
        for command in ("run", "list", "publish", "check"):
            result = cli(command, "--help")
            assert result.returncode == 0
            assert "Usage: consumer-host " + command in result.stdout


class TestEmbeddedBroker:
    def test_publish_in_one_process_and_run_in_another(self, tmp_path):
        handled = tmp_path / "handled.jsonl"
        env = {"ORDERS_LOG": str(handled), "CONSUMER_HOST_DATA_DIR": str(tmp_path / "data")}
        published = cli("publish", "orders", '{"id": 1}', "--count", "3", cwd=tmp_path, env=env)
        assert published.returncode == 0, published.stderr
        assert "published 3 message(s)" in published.stdout
        lines = cli("publish", "orders", "-", cwd=tmp_path, env=env, input='{"id": 2}\n{"id": 3}\n')
        assert lines.returncode == 0, lines.stderr
        process = start("run", str(APPS / "orders_app.py"), cwd=tmp_path, env=env)
        try:
            wait_until(
                lambda: handled.exists() and len(handled.read_text().splitlines()) == 5,
                timeout=20,
                what="five orders",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        ids = sorted(json.loads(line)["id"] for line in handled.read_text().splitlines())
        assert ids == [1, 1, 1, 2, 3]
        first = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        warning = [line for line in first if line["event"] == "embedded_broker"]
        assert warning
        assert "CONSUMER_HOST_BROKER_URL" in warning[0]["detail"]
        assert any(
            line["event"] == "broker_selected" and line["source"] == "embedded default"
            for line in first
        )


class TestCheck:
    def test_check_exits_0_on_a_reachable_broker_and_prints_depths(self):
        require("amqp")
        queue = f"check-{uuid.uuid4().hex[:8]}"
        result = cli(
            "check",
            str(APPS / "orders_app.py"),
            "--broker",
            AMQP_URL,
            env={"ORDERS_QUEUE": queue, "ORDERS_LOG": os.devnull},
        )
        assert result.returncode == 0, result.stderr
        assert queue in result.stdout
        assert f"{queue}.dlq" in result.stdout
        assert "guest:guest" not in result.stdout
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_queue", queue],
            capture_output=True,
            check=False,
            timeout=60,
        )
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_queue", f"{queue}.dlq"],
            capture_output=True,
            check=False,
            timeout=60,
        )

    def test_check_exits_1_with_one_clear_line_when_the_broker_is_unreachable(self):
        result = cli(
            "check",
            str(APPS / "orders_app.py"),
            "--broker",
            "amqp://user:SECRET123@127.0.0.1:1//",
            env={"ORDERS_LOG": os.devnull},
        )
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "check failed" in line
        assert "127.0.0.1:1" in line
        assert "SECRET123" not in result.stderr + result.stdout


class TestList:
    def test_list_shows_expanded_instances_and_json(self):
        table = cli("list", str(APPS / "orders_app.py"), env={"ORDERS_LOG": os.devnull})
        assert table.returncode == 0
        assert "orders-1" in table.stdout
        assert "orders-2" in table.stdout
        rows = json.loads(
            cli(
                "list", str(APPS / "orders_app.py"), "--json", env={"ORDERS_LOG": os.devnull}
            ).stdout
        )
        assert [(r["instance"], r["queue"], r["pool"]) for r in rows] == [
            ("orders-1", "orders", 2),
            ("orders-2", "orders", 2),
        ]

    NO_BROKER_VARIABLES: ClassVar[dict[str, str]] = {
        name: "" for name in ("CONSUMER_HOST_BROKER_URL", *PLATFORM_VARIABLES)
    }

    @pytest.mark.parametrize(
        ("broker", "shown"),
        [
            ("redis://127.0.0.1:1/0?cluster=true", "{orders}.dlq"),
            ("redis+streams://127.0.0.1:1,127.0.0.1:2/0?cluster=true", "{orders}.dlq"),
            ("redis://127.0.0.1:1/0", "orders.dlq"),
            ("amqp://guest:guest@127.0.0.1:1//", "orders.dlq"),
        ],
    )
    def test_list_names_the_dead_letter_queue_as_the_broker_does(self, broker, shown):
        """Only the configuration is read: no broker listens on port 1."""
        env = {**self.NO_BROKER_VARIABLES, "ORDERS_LOG": os.devnull}
        listed = cli("list", str(APPS / "orders_app.py"), "--json", "--broker", broker, env=env)
        assert listed.returncode == 0, listed.stderr
        assert {row["dead_letter"] for row in json.loads(listed.stdout)} == {shown}
        table = cli("list", str(APPS / "orders_app.py"), "--broker", broker, env=env)
        assert shown in table.stdout.splitlines()[1].split()

    def test_list_reads_the_cluster_from_the_app_s_own_broker(self, tmp_path):
        app = tmp_path / "app.py"
        app.write_text(
            "from consumer_host import Host\n"
            "host = Host('shop', broker='redis://127.0.0.1:1/0?cluster=true')\n"
            "@host.consumer('orders', queue='orders')\n"
            "def handle(message): pass\n"
            "@host.consumer('refunds', queue='refunds', dead_letter='{refunds}.failed')\n"
            "def refund(message): pass\n",
            encoding="utf-8",
        )
        listed = cli("list", str(app), "--json", env=self.NO_BROKER_VARIABLES)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["queue"], r["dead_letter"]) for r in rows] == [
            ("orders", "{orders}.dlq"),
            ("refunds", "{refunds}.failed"),
        ]


class TestBrokerPrecedence:
    URLS: ClassVar[dict[str, str]] = {
        "flag": "amqp://flag//",
        "CONSUMER_HOST_BROKER_URL": "amqp://ours//",
        "CLOUDAMQP_URL": "amqp://cloudamqp//",
        "RABBITMQ_URL": "amqp://rabbitmq//",
        "REDIS_TLS_URL": "rediss://redis-tls:6380/0",
        "REDIS_URL": "redis://redis:6379/0",
        "code": "amqp://code//",
    }

    @pytest.mark.parametrize("winner", list(URLS))
    def test_each_source_wins_over_those_below_it(self, winner):
        order = list(self.URLS)
        present = order[order.index(winner) :]
        environ = {k: v for k, v in self.URLS.items() if k in present and k.isupper()}
        choice = resolve_broker(
            environ,
            flag=self.URLS["flag"] if "flag" in present else None,
            code=self.URLS["code"] if "code" in present else None,
        )
        assert choice.url == self.URLS[winner]
        assert choice.source == {"flag": "--broker", "code": "Host(broker=...)"}.get(winner, winner)

    def test_nothing_configured_means_the_embedded_broker(self):
        choice = resolve_broker({})
        assert choice.embedded
        assert choice.url.startswith("filesystem:///")
        assert choice.url.endswith("/consumer-host/broker")

    def test_empty_variables_are_ignored(self):
        assert (
            resolve_broker({"CONSUMER_HOST_BROKER_URL": " ", "REDIS_URL": "redis://r:1/0"}).source
            == "REDIS_URL"
        )

    def test_the_winning_source_is_logged_redacted(self):
        require("amqp")
        queue = f"p-{uuid.uuid4().hex[:10]}"
        process = start(
            "run",
            str(APPS / "orders_app.py"),
            env={
                "CLOUDAMQP_URL": "amqp://guest:guest@127.0.0.1:5672//",
                "ORDERS_LOG": os.devnull,
                "ORDERS_QUEUE": queue,
            },
        )
        try:
            lines = wait_for_line(process, "consumer_connected")
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=15)
            for name in (queue, f"{queue}.dlq"):
                subprocess.run(
                    ["rabbitmqctl", "-q", "delete_queue", name],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
        text = "".join(lines) + out
        selected = [json.loads(line) for line in lines if "broker_selected" in line]
        assert selected[0]["source"] == "CLOUDAMQP_URL"
        assert selected[0]["broker"] == "amqp://guest:***@127.0.0.1:5672//"
        assert ":guest@" not in text
        for line in text.splitlines():
            json.loads(line)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestHealthFromTheCommand:
    def test_run_serves_probes_on_the_health_port_and_a_taken_port_exits_2(self):
        import urllib.request

        port = free_port()
        process = start(
            "run",
            str(APPS / "lifecycle.py"),
            env={"CONSUMER_HOST_HEALTH_PORT": str(port), "CONSUMER_HOST_HEALTH_HOST": "127.0.0.1"},
        )
        try:
            wait_for_line(process, "steady running")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                assert r.status == 200
            taken = cli(
                "run",
                str(APPS / "lifecycle.py"),
                "--health-port",
                str(port),
                "--health-host",
                "127.0.0.1",
            )
            assert taken.returncode == 2
            assert (
                taken.stderr.strip()
                .splitlines()[-1]
                .startswith("consumer-host: error: cannot serve health checks on 127.0.0.1:")
            )
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=15)
        assert process.returncode == 0
