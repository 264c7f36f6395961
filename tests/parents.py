"""Running ``consumer-host run --processes`` in a subprocess, and reading what it did: the
parent's merged output, its health port, and the ledger the processes app appends to
(tests/apps/processes_app.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

from .brokers import AMQP_URL
from .helpers import COMMAND, wait_until

APPS = Path(__file__).parent / "apps"
APP = APPS / "processes_app.py"


class Parent:
    """``consumer-host run ...`` in a subprocess, its merged output read by a thread."""

    def __init__(
        self, *args: str, env: dict[str, str], cwd: Path | None = None, session: bool = False
    ) -> None:
        """``session``: its own session and process group, for a test that signals the group."""
        self.process = subprocess.Popen(
            [COMMAND, "run", *args, "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=session,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def events(self, name: str, **match: object) -> list[dict]:
        found = []
        for line in list(self.lines):
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("event") == name and all(record.get(k) == v for k, v in match.items()):
                found.append(record)
        return found

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def port(self) -> int:
        """The parent's health port (its health_server_started line has no ``process``)."""

        def parents() -> list[dict]:
            return [e for e in self.events("health_server_started") if "process" not in e]

        wait_until(lambda: bool(parents()), 20, "the parent's health server")
        return int(parents()[0]["port"])

    def stop(self, timeout: float = 20) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            # The children notice their parent is gone within a second and drain by themselves.
            self.process.kill()
            self.process.wait(10)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def app_env(queue: str, ledger: Path, **extra: str) -> dict[str, str]:
    return {
        "CONSUMER_HOST_BROKER_URL": AMQP_URL,
        "PROCESSES_TEST_QUEUE": queue,
        "PROCESSES_TEST_LEDGER": str(ledger),
        **{f"PROCESSES_TEST_{key}": value for key, value in extra.items()},
    }


def ledger_ids(ledger: Path, what: str) -> set[int]:
    if not ledger.exists():
        return set()
    return {
        int(line.split()[1])
        for line in ledger.read_text().splitlines()
        if line.startswith(what + " ")
    }


def ledger_processes(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    return {line.split()[2] for line in ledger.read_text().splitlines() if line}


def publish(tool, queue: str, count: int) -> set[int]:
    tool.publish_many(queue, [{"id": i} for i in range(count)])
    return set(range(count))


def remaining_ids(tool, queue: str) -> set[int]:
    return {json.loads(body)["id"] for body, _headers, _ctype in tool.drain(queue)}


def child_pids(parent: Parent, count: int) -> list[int]:
    def started() -> int:
        return sum(1 for e in parent.events("host_started") if "process" in e)

    wait_until(lambda: started() == count, 20, "every child up")
    return [e["pid"] for e in parent.events("process_started")]


def process_state(pid: int) -> str:
    """The kernel's one-letter state of ``pid`` (``T``: stopped), ``""`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
