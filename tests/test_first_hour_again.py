"""Issue 26, the first hour again: what a newcomer still tripped over, through the real command.

Every test here runs ``consumer-host`` in a subprocess, as a newcomer or a platform does.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
from pathlib import Path

import pytest

from consumer_host import __version__
from consumer_host.cli.config import load_app

from .helpers import cli, wait_until
from .test_cli import free_port, start, wait_for_line
from .test_first_hour import one_line_error

ROOT = Path(__file__).parent.parent
APPS = Path(__file__).parent / "apps"
TOKEN = "first-hour-token"  # noqa: S105 - a test's own token


@pytest.mark.parametrize("flags", [("--processes", "2"), ("--reload",), ()])
def test_a_health_port_in_use_is_one_line_and_exit_2(flags):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "run",
            str(APPS / "lifecycle.py"),
            "--health-port",
            str(port),
            "--health-host",
            "127.0.0.1",
            *flags,
        )
    line = one_line_error(result)
    assert f"127.0.0.1:{port}" in line
    assert "Address already in use" in line


# -- 5: the example's producer is opt-in ------------------------------------------------------


def test_the_example_publishes_demo_orders_only_when_asked():
    example = str(ROOT / "examples" / "orders.py")
    plain = cli("list", example, "--json", env={"EXAMPLE_PRODUCER": ""})
    asked = cli("list", example, "--json", env={"EXAMPLE_PRODUCER": "1"})
    assert plain.returncode == asked.returncode == 0, plain.stderr + asked.stderr
    assert "producer" not in {row["worker"] for row in json.loads(plain.stdout)}
    assert "producer" in {row["worker"] for row in json.loads(asked.stdout)}


def test_readme_s_orders_cannot_be_taken_for_the_demo_producer_s():
    readme = (ROOT / "README.md").read_text()
    ids = [
        json.loads(body)["id"]
        for body in re.findall(r"consumer-host publish orders '(\{[^']*\})'", readme)
    ]
    source = (ROOT / "examples" / "orders.py").read_text()
    first_demo = int(re.search(r"^FIRST_DEMO_ID = ([\d_]+)", source, re.M)[1])
    assert ids
    assert all(i < first_demo for i in ids)
    app = json.loads((ROOT / "app.json").read_text())
    assert app["env"]["EXAMPLE_PRODUCER"]["value"] != "1"
    assert "EXAMPLE_PRODUCER" not in (ROOT / "Procfile").read_text()
    assert app.get("repository", "x") != "", "no empty repository field"


# -- 6: papercuts --------------------------------------------------------------------------------


def test_minus_v_prints_the_version():
    short, long = cli("-V"), cli("--version")
    assert short.returncode == 0
    assert short.stdout == long.stdout == f"consumer-host, version {__version__}\n"


@pytest.mark.parametrize("app", [".", ".orders"])
def test_run_of_a_directory_or_a_relative_module_is_one_line(app, tmp_path):
    line = one_line_error(cli("run", app, cwd=tmp_path))
    assert "path/to/app.py" in line


def test_dotted_paths_and_a_package_here_still_load(tmp_path, monkeypatch):
    source = (
        "from consumer_host import Host\nhost = Host('t')\nhost.worker('w')(lambda stop: None)\n"
    )
    (tmp_path / "app.py").write_text(source)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(source)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("../app.py").name == "t"
    monkeypatch.chdir(tmp_path)
    for spec in ("./app.py", "pkg:host", "pkg"):
        assert load_app(spec).name == "t", spec


def test_publish_without_body_reads_stdin_and_refuses_an_empty_one():
    assert "stdin" in cli("publish", "--help").stdout
    line = one_line_error(cli("publish", "q", input="", env={"CONSUMER_HOST_BROKER_URL": ""}))
    assert "stdin was empty" in line


def test_publish_without_body_publishes_each_line_of_stdin(tmp_path):
    env = {"CONSUMER_HOST_BROKER_URL": f"filesystem://{tmp_path / 'broker'}"}
    result = cli("publish", "orders", env=env, input='{"id": 1}\n{"id": 2}\n')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("published 2 message(s) to 'orders'")


def test_list_shows_concurrency_and_partition_by(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "from consumer_host import Host\n"
        "host = Host('t')\n"
        "def by_customer(message):\n"
        "    return message.body['customer']\n"
        "host.consumer('orders', queue='orders', concurrency=4, partition_by=by_customer)("
        "lambda m: None)\n"
    )
    result = cli("list", str(app))
    assert result.returncode == 0, result.stderr
    header, first = result.stdout.splitlines()[:2]
    assert "CONCURRENCY" in header
    assert "PARTITION_BY" in header
    assert " 4 " in first
    assert "by_customer" in first


def test_pause_of_a_misspelt_name_lists_the_consumers_and_says_where_the_token_comes_from(
    tmp_path,
):
    app = tmp_path / "app.py"
    app.write_text(
        "from consumer_host import Host\n"
        "host = Host('t')\n"
        "host.consumer('orders', queue='orders')(lambda m: None)\n"
        "host.consumer('payments', queue='payments')(lambda m: None)\n"
    )
    port = free_port()
    env = {
        "CONSUMER_HOST_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "CONSUMER_HOST_HEALTH_PORT": str(port),
        "CONSUMER_HOST_HEALTH_HOST": "127.0.0.1",
        "CONSUMER_HOST_CONTROL_TOKEN": TOKEN,
    }
    process = start("run", str(app), "--log-format", "json", env=env)
    try:
        wait_for_line(process, "health_server_started")
        url = f"http://127.0.0.1:{port}"
        line = one_line_error(cli("pause", "ordres", "--url", url, env=env))
        assert "consumers: orders, payments" in line
        assert "did you mean 'orders'" in line
        missing = one_line_error(
            cli("pause", "orders", "--url", url, env={"CONSUMER_HOST_CONTROL_TOKEN": ""})
        )
        assert "CONSUMER_HOST_CONTROL_TOKEN in the host's environment" in missing
        assert TOKEN not in line + missing
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_readme_documents_shell_completion_and_building_on_the_image():
    readme = (ROOT / "README.md").read_text()
    assert "_CONSUMER_HOST_COMPLETE=bash_source consumer-host" in readme
    assert "FROM consumer-host\nUSER root" in readme
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    for command in ("dlq list", "dlq replay", "dlq purge", "EXAMPLE_PRODUCER=1"):
        assert command in quickstart
    script = cli(env={"_CONSUMER_HOST_COMPLETE": "bash_source"})
    assert "_consumer_host_completion" in script.stdout


# -- 4: dlq on the embedded broker -------------------------------------------------------------


def embedded_messages(folder: Path, queue: str) -> list[dict]:
    """The envelopes kombu's filesystem broker holds for ``queue``, oldest first."""
    found = []
    for name in sorted(p.name for p in (folder / "queue").iterdir()):
        if name.partition(".")[2] != f"{queue}.msg":
            continue
        try:
            found.append(json.loads((folder / "queue" / name).read_text()))
        except FileNotFoundError:
            continue  # a consumer took it meanwhile
    return found


def test_dlq_list_replay_and_purge_work_on_the_embedded_broker(tmp_path):
    folder = tmp_path / "broker"
    env = {"CONSUMER_HOST_BROKER_URL": f"filesystem://{folder}"}
    example = str(ROOT / "examples" / "orders.py")
    for order, error_type in ((42, "OutOfStock"), (49, "OutOfStock"), (50, "KeyError")):
        published = cli(
            "publish",
            "orders.dlq",
            json.dumps({"id": order}),
            "--header",
            f"x-error-type={error_type}",
            "--header",
            f"x-error={error_type}: order {order}",
            "--header",
            "x-attempt=3",
            "--header",
            "tenant=a",
            env=env,
        )
        assert published.returncode == 0, published.stderr
    before = sorted(p.name for p in (folder / "queue").iterdir())
    listed = cli("dlq", "list", example, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    counts = {row["error_type"]: row["count"] for row in json.loads(listed.stdout)}
    assert counts == {"OutOfStock": 2, "KeyError": 1}
    assert sorted(p.name for p in (folder / "queue").iterdir()) == before, "list changes nothing"

    replayed = cli(
        "dlq", "replay", example, "--consumer", "orders", "--error-type", "OutOfStock", env=env
    )
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("replayed 2 dead letter(s)")
    copies = embedded_messages(folder, "orders")
    # (kombu names files by the millisecond: copies made within one may swap places)
    assert sorted(json.loads(base64.b64decode(c["body"]))["id"] for c in copies) == [42, 49]
    assert all(c["headers"] == {"tenant": "a"} for c in copies), "attempts and error reset"

    refused = one_line_error(cli("dlq", "purge", example, "--consumer", "orders", env=env))
    assert "--yes" in refused
    purged = cli("dlq", "purge", example, "--consumer", "orders", "--yes", env=env)
    assert purged.stdout.startswith("purged 1 dead letter(s)")
    assert embedded_messages(folder, "orders.dlq") == []
    assert cli("dlq", "list", example, env=env).stdout.strip() == "no dead letters"


HOLDING_APP = """
from consumer_host import Host

host = Host("shop")


@host.consumer("orders", queue="orders", max_retries=2, retry_backoff_min=60, retry_backoff_max=60)
def handle(message):
    raise RuntimeError("fails until fixed")
"""


def test_a_held_retry_goes_back_with_its_attempt_on_drain_and_is_counted(tmp_path):
    """On the embedded broker the consumer holds a retry until it is due; a stop gives it back
    to the queue with its attempt count (never to the dead letters) and the drain line says so."""
    app = tmp_path / "app.py"
    app.write_text(HOLDING_APP)
    folder = tmp_path / "broker"
    env = {"CONSUMER_HOST_BROKER_URL": f"filesystem://{folder}"}
    assert cli("publish", "orders", '{"id": 1}', env=env).returncode == 0
    process = start("run", str(app), "--log-format", "json", env=env)
    try:
        wait_for_line(process, "message_retrying")
        # The retried copy is fetched back (its file leaves the queue folder) and held.
        wait_until(lambda: embedded_messages(folder, "orders") == [], what="the copy held")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [draining] = [r for r in records if r["event"] == "host_draining"]
    assert draining["held_retries"] == 1
    assert not [r for r in records if r["event"] == "message_dead_lettered"]
    [back] = embedded_messages(folder, "orders")
    assert back["headers"]["x-attempt"] == 2
    assert embedded_messages(folder, "orders.dlq") == []
