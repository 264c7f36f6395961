"""Issue 16, the first hour: the mistakes and questions of a newcomer's first commands.

Everything here goes through the real ``consumer-host`` command in a subprocess, as a newcomer
(or a platform: Docker, Heroku) runs it, except the redaction functions and the broker
resolution, which are also tested directly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import platformdirs
import pytest

from consumer_host import __version__
from consumer_host.redaction import redact_event, redact_text, redact_url
from consumer_host.transports.broker import BrokerCircuits, data_dir, resolve_broker

from .brokers import REDIS_URL, require
from .helpers import COMMAND, cli
from .test_cli import start, wait_for_line

ROOT = Path(__file__).parent.parent
APPS = Path(__file__).parent / "apps"

#: Variables that choose a broker: cleared so the machine's own settings cannot leak in.
NO_BROKER_VARIABLES = dict.fromkeys(
    ("CONSUMER_HOST_BROKER_URL", "CLOUDAMQP_URL", "RABBITMQ_URL", "REDIS_TLS_URL", "REDIS_URL"), ""
)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``consumer-host: error:`` line of a usage failure (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line != "app imported"]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("consumer-host: error: ")
    return lines[0]


def write_app(folder: Path, body: str, name: str = "app.py") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestOptionMistakes:
    @pytest.mark.parametrize(
        ("decorator", "message"),
        [
            ("pool=0", "consumer 'orders': pool must be an integer >= 1, got 0"),
            ("prefetch=-1", "consumer 'orders': prefetch must be an integer >= 1, got -1"),
        ],
    )
    def test_an_option_mistake_in_the_app_is_one_line_naming_the_app_and_its_line(
        self, tmp_path, decorator, message
    ):
        write_app(
            tmp_path,
            f"""
            from consumer_host import Host

            host = Host("shop")


            @host.consumer("orders", queue="orders", {decorator})
            def handle(message):
                pass
            """,
        )
        line = one_line_error(cli("run", "app.py", cwd=tmp_path))
        assert line.startswith("consumer-host: error: APP 'app.py' (app.py line 6): ")
        assert line.endswith(message.split(": ", 1)[1])

    def test_a_misspelt_keyword_is_one_line_that_suggests_the_option(self, tmp_path):
        write_app(
            tmp_path,
            """
            from consumer_host import Host

            host = Host("shop")


            @host.consumer("orders", queue="orders", prefech=5)
            def handle(message):
                pass
            """,
        )
        result = cli("run", "app.py", cwd=tmp_path)
        assert result.returncode == 2
        line = one_line_error(result)
        assert "unknown option 'prefech'; did you mean 'prefetch'?" in line
        assert "Traceback" not in result.stderr

    def test_a_mistake_in_a_module_the_app_imports_names_that_module(self, tmp_path):
        write_app(tmp_path, "", "shop/__init__.py")
        write_app(
            tmp_path, "from consumer_host import Host\n\nhost = Host('shop')\n", "shop/core.py"
        )
        write_app(
            tmp_path,
            """
            from shop.core import host


            @host.worker("beat", pool=0)
            def beat(stop):
                stop.wait()
            """,
            "shop/workers.py",
        )
        write_app(tmp_path, "from shop.core import host\nimport shop.workers\n", "shop/app.py")
        line = one_line_error(cli("list", "shop.app:host", cwd=tmp_path))
        assert f"APP 'shop.app:host' ({os.path.join('shop', 'workers.py')} line 4): " in line
        assert "pool must be an integer >= 1, got 0" in line

    @pytest.mark.parametrize("command", ["run", "list", "check"])
    def test_an_app_that_registers_nothing_says_so(self, tmp_path, command):
        write_app(tmp_path, "from consumer_host import Host\n\nhost = Host('empty')\n")
        line = one_line_error(cli(command, "app.py", cwd=tmp_path))
        assert "APP 'app.py' registered no workers" in line
        assert "@host.consumer" in line

    @pytest.mark.parametrize(
        ("value", "message"),
        [("steady=zero", "N must be a whole number"), ("steady=0", "N must be at least 1")],
    )
    def test_a_pool_override_that_is_not_a_positive_whole_number(self, value, message):
        flag = one_line_error(cli("run", str(APPS / "lifecycle.py"), "--pool", value))
        assert f"--pool {value!r}: {message}" in flag
        env = one_line_error(
            cli("run", str(APPS / "lifecycle.py"), env={"CONSUMER_HOST_POOL": value})
        )
        assert f"--pool {value!r}: {message}" in env


class TestTheAppFromTheEnvironment:
    def test_run_without_app_runs_consumer_host_app(self):
        process = start("run", env={"CONSUMER_HOST_APP": str(APPS / "lifecycle.py")})
        wait_for_line(process, "steady running")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
        assert process.returncode == 0, err

    def test_no_app_and_no_variable_is_one_line_naming_the_variable(self):
        line = one_line_error(cli("run", env={"CONSUMER_HOST_APP": ""}))
        assert "APP is missing" in line
        assert "CONSUMER_HOST_APP" in line

    def test_the_dockerfile_cmd_runs_the_app_named_by_consumer_host_app(self):
        instructions = dockerfile_instructions(ROOT / "Dockerfile")
        argv = json.loads(instructions["ENTRYPOINT"]) + json.loads(instructions["CMD"])
        assert argv[0] == "consumer-host"
        defaults = dict(pair.split("=", 1) for pair in shlex.split(instructions["ENV"]))
        # The bare image still runs the bundled example, which the image copies in.
        assert (ROOT / defaults["CONSUMER_HOST_APP"]).is_file()
        assert defaults["CONSUMER_HOST_APP"].startswith("examples/")
        process = subprocess.Popen(
            [COMMAND, *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                **defaults,
                "CONSUMER_HOST_HEALTH_PORT": str(free_port()),
                "CONSUMER_HOST_HEALTH_HOST": "127.0.0.1",
                "CONSUMER_HOST_APP": str(APPS / "lifecycle.py"),
            },
        )
        wait_for_line(process, "steady running")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        started = [json.loads(line) for line in out.splitlines() if '"host_stopped"' in line]
        assert started
        assert started[0]["host"] == "cli-test"  # the test app, not the example ("shop")


def dockerfile_instructions(path: Path) -> dict[str, str]:
    """The last stage's instructions (continuation lines joined), the last of each kind."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    stage = text.split("\nFROM ")[-1]
    found: dict[str, str] = {}
    for line in stage.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.isupper() and rest:
            found[keyword] = rest.strip()
    return found


class TestWhichBroker:
    def test_the_chosen_broker_and_an_overridden_code_url_are_logged(self, tmp_path):
        require("redis")
        code_url = "amqp://shop:Zq7codecanary@127.0.0.1:5672//"
        queue = f"first-hour-{os.urandom(5).hex()}"
        write_app(
            tmp_path,
            f"""
            from consumer_host import Host

            host = Host("shop", broker={code_url!r})


            @host.consumer("orders", queue={queue!r})
            def handle(message):
                pass
            """,
        )
        process = start(
            "run",
            "app.py",
            cwd=tmp_path,
            env={**NO_BROKER_VARIABLES, "REDIS_URL": REDIS_URL, "CONSUMER_HOST_LOG_FORMAT": "json"},
        )
        try:
            seen = wait_for_line(process, "consumer_connected")
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=15)
            _delete_redis_queue(queue)
        assert process.returncode == 0, err
        lines = [json.loads(line) for line in [*seen, *out.splitlines()] if line.startswith("{")]
        selected = next(line for line in lines if line["event"] == "broker_selected")
        assert selected["level"] == "info"
        assert selected["source"] == "REDIS_URL"
        assert selected["broker"] == redact_url(REDIS_URL)
        warning = next(line for line in lines if line["event"] == "broker_overridden")
        assert warning["level"] == "warning"
        assert warning["variable"] == "REDIS_URL"
        assert warning["overridden"] == "amqp://shop:***@127.0.0.1:5672//"
        assert "REDIS_URL" in warning["detail"]
        assert "Zq7codecanary" not in "".join(seen) + out + err

    def test_overridden_is_set_only_when_a_variable_beats_a_different_code_url(self):
        code = "amqp://u:pw@code//"
        assert resolve_broker({"REDIS_URL": "redis://r/0"}, code=code).overridden == (
            "amqp://u:***@code//"
        )
        assert resolve_broker({"REDIS_URL": code}, code=code).overridden is None
        assert resolve_broker({}, code=code).overridden is None
        assert resolve_broker({"REDIS_URL": "redis://r/0"}, flag="amqp://f//").overridden is None
        assert resolve_broker({"REDIS_URL": "redis://r/0"}).overridden is None


def _delete_redis_queue(queue: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = [queue, f"{queue}.dlq", *client.keys(f"consumer-host:{queue}:*")]
    client.delete(*keys)


class TestEmbeddedBrokerData:
    def test_messages_live_in_consumer_host_data_dir_not_the_current_directory(self, tmp_path):
        work, data = tmp_path / "work", tmp_path / "data"
        work.mkdir()
        result = cli(
            "publish",
            "orders",
            '{"id": 1}',
            cwd=work,
            env={**NO_BROKER_VARIABLES, "CONSUMER_HOST_DATA_DIR": str(data)},
        )
        assert result.returncode == 0, result.stderr
        assert f"filesystem://{data / 'broker'}" in result.stdout
        assert list((data / "broker" / "queue").iterdir())
        assert list(work.iterdir()) == []

    def test_the_default_is_the_per_user_data_directory(self, tmp_path):
        home = tmp_path / "home"
        home.mkdir()
        env = {**NO_BROKER_VARIABLES, "HOME": str(home), "CONSUMER_HOST_DATA_DIR": ""}
        env["XDG_DATA_HOME"] = ""
        result = cli("publish", "orders", '{"id": 1}', cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        if sys.platform.startswith("linux"):
            assert list((home / ".local/share/consumer-host/broker/queue").iterdir())
        assert not (tmp_path / ".consumer-host").exists()
        assert data_dir({}) == Path(platformdirs.user_data_dir("consumer-host", appauthor=False))
        assert resolve_broker({"CONSUMER_HOST_DATA_DIR": str(tmp_path)}).url == (
            f"filesystem://{tmp_path}/broker"
        )


class TestStatusWithoutAHost:
    def test_status_says_how_to_point_it_at_a_host(self):
        port = free_port()
        for result in (
            cli("status", "--url", f"http://127.0.0.1:{port}"),
            cli("status", env={"CONSUMER_HOST_HEALTH_PORT": str(port)}),
        ):
            assert result.returncode == 1
            [line] = result.stderr.splitlines()
            assert f"cannot reach http://127.0.0.1:{port}/status" in line
            assert "--url" in line
            assert "CONSUMER_HOST_HEALTH_PORT" in line


CANARY = "Zq7canary"

#: Every form of secret-bearing URL the transports accept, on an unreachable port.
SECRET_URLS = [
    f"redis://127.0.0.1:1/0?password={CANARY}",
    f"rediss://127.0.0.1:1/0?password={CANARY}&ssl_cert_reqs=none",
    f"redis://:{CANARY}@127.0.0.1:1/0",
    f"redis://:p%40{CANARY}%2F@127.0.0.1:1/0",
    f"redis://user:{CANARY}1@127.0.0.1:1/0?password={CANARY}2",
    f"redis+streams://:{CANARY}@127.0.0.1:1/0",
    f"rediss+streams://127.0.0.1:1/0?db=0&password={CANARY}&ssl_cert_reqs=none",
    f"amqp://user:{CANARY}@127.0.0.1:1//?heartbeat=5",
    f"amqp://:{CANARY}@127.0.0.1:1//",
    f"amqp://user:p%40ss{CANARY}@127.0.0.1:1/vhost?heartbeat=5",
    f"amqp://user:pa@ss{CANARY}@127.0.0.1:1//",
    f"amqps://user:{CANARY}@127.0.0.1:1//?ssl_keyfile_password={CANARY}",
    f"amqp://127.0.0.1:1//?password={CANARY}",
]


class TestRedaction:
    @pytest.mark.parametrize("url", SECRET_URLS)
    def test_check_never_prints_the_secret(self, url):
        result = cli("check", str(APPS / "orders_app.py"), "--broker", url, env={"ORDERS_LOG": "-"})
        assert result.returncode in (1, 2), result.stderr
        assert "Traceback" not in result.stderr
        assert CANARY not in result.stdout + result.stderr
        assert "127.0.0.1:1" in result.stderr

    def test_check_never_prints_the_secret_of_a_url_from_the_environment(self):
        result = cli(
            "check",
            str(APPS / "orders_app.py"),
            env={
                **NO_BROKER_VARIABLES,
                "REDIS_URL": f"redis://127.0.0.1:1/0?password={CANARY}",
                "ORDERS_LOG": "-",
            },
        )
        assert result.returncode == 1
        assert CANARY not in result.stdout + result.stderr
        assert "password=***" in result.stderr

    @pytest.mark.parametrize("url", SECRET_URLS)
    def test_the_redaction_functions_mask_every_form(self, url):
        assert CANARY not in redact_url(url)
        assert "127.0.0.1:1" in redact_url(url)
        text = f"cannot connect to {url}: refused; retrying '{url}' and \"{url}\""
        assert CANARY not in redact_text(text)
        event = redact_event(None, "info", {"error": text, "nested": [{"url": url}]})
        assert CANARY not in json.dumps(event)
        circuits = BrokerCircuits(lambda _event: None)
        circuits.for_url(url)
        assert CANARY not in json.dumps(circuits.states())  # what /status shows

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("amqp://guest:guest@h:5672//", "amqp://guest:***@h:5672//"),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
            ("redis://h/0?ssl_cert_reqs=none", "redis://h/0?ssl_cert_reqs=none"),
            ("amqp://u:a@b@h//", "amqp://u:***@h//"),
            ("amqp://u:x@h1;amqp://u:y@h2//", "amqp://u:***@h1;amqp://u:***@h2//"),
            ("amqp://h:5672/v?x=1", "amqp://h:5672/v?x=1"),
            ("filesystem:///home/me/broker", "filesystem:///home/me/broker"),
        ],
    )
    def test_redaction_keeps_everything_but_the_secret(self, url, expected):
        assert redact_url(url) == expected


class TestHerokuBuild:
    def test_python_version_files_agree(self):
        version = (ROOT / ".python-version").read_text().strip()
        assert version == "3.11"
        assert f"FROM python:{version}-slim" in (ROOT / "Dockerfile").read_text()
        assert f'requires-python = ">={version}"' in (ROOT / "pyproject.toml").read_text()
        app = json.loads((ROOT / "app.json").read_text())
        assert app["buildpacks"] == [{"url": "heroku/python"}]

    def test_requirements_txt_installs_the_command_in_a_fresh_venv(self, tmp_path):
        """What Heroku's Python buildpack does: ``pip install -r requirements.txt`` in the app."""
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        pip = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "-r", "requirements.txt"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert pip.returncode == 0, pip.stderr[-3000:]
        version = subprocess.run(
            [str(venv / "bin" / "consumer-host"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"consumer-host, version {__version__}"


class TestReadme:
    def test_the_quickstart_publishes_an_order_that_succeeds_and_shows_a_failing_one(self):
        readme = (ROOT / "README.md").read_text()
        quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
        ids = [
            json.loads(body)["id"]
            for body in re.findall(r"consumer-host publish orders '(\{[^']*\})'", quickstart)
        ]
        assert len(ids) >= 2, quickstart
        assert ids[0] % 7 != 0  # examples/orders.py fails every multiple of 7 on purpose
        assert any(number % 7 == 0 for number in ids[1:])
