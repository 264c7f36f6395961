"""The 3-node RabbitMQ cluster of scripts/rabbitmq-cluster.sh, as the cluster tests use it:
start and stop it, kill -9 and revive a node, find a quorum queue's leader, publish steadily from
a thread, and record the measured figures for docs/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import amqp

from consumer_host import Publisher
from consumer_host.errors import BrokerError
from tests.chaos.harness import LEDGER_URL, Ledger
from tests.helpers import COMMAND, wait_until

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
RESULTS = Path(os.environ.get("CLUSTER_RESULTS", ROOT / ".cluster-results.jsonl"))
NODES = (1, 2, 3)
APP = str(Path(__file__).parent / "amqp_app.py")


def record(scenario: str, **figures: Any) -> None:
    """Append one measurement, for docs/RELIABILITY.md and README's Clusters section."""
    with RESULTS.open("a", encoding="utf-8") as out:
        line = {"scenario": scenario, "broker": "rabbitmq-cluster", **figures}
        out.write(json.dumps(line) + "\n")


def node_url(n: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{5700 + n}//"


class RabbitCluster:
    """Drives scripts/rabbitmq-cluster.sh (nodes chcl1..3@localhost, AMQP on 5701..5703)."""

    def run(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            # Never the test process's stdin: under xdist it is the worker's channel, and a node
            # started detached would hold it.
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-cluster.sh {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        self.run("start")

    def stop(self) -> None:
        self.run("stop", timeout=120)

    def url(self, *order: int) -> str:
        """The failover URL with the nodes in ``order`` (all three, 1 2 3, by default)."""
        return ";".join(node_url(n) for n in (order or NODES))

    def kill(self, n: int) -> float:
        """kill -9 node ``n``; the moment it was killed (time.time())."""
        self.run("kill", str(n))
        return time.time()

    def revive(self, n: int) -> None:
        self.run("revive", str(n))

    def ensure_all_up(self) -> None:
        """Revive any node a failed test left down."""
        for line in self.run("status").splitlines():
            name, state = line.split()
            if state != "up":
                self.revive(int(name.removeprefix("chcl").split("@")[0]))

    def leader(self, queue: str, *, via: int) -> int:
        """The node number of quorum queue ``queue``'s leader, asked of node ``via``."""
        out = self.run("ctl", str(via), "-q", "list_queues", "name", "leader", "--no-table-headers")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1].removeprefix("chcl").split("@")[0])
        raise LookupError(f"no queue {queue!r} on the cluster")

    def declare_quorum(self, queue: str, *, on: int) -> None:
        """Declare quorum queue ``queue`` through node ``on``: its leader starts there."""
        with self.channel(on) as channel:
            channel.queue_declare(
                queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
            )

    def depth(self, queue: str, *, via: int) -> int:
        with self.channel(via) as channel:
            return int(channel.queue_declare(queue, passive=True).message_count)

    def delete(self, queue: str, *, via: int) -> None:
        """Delete ``queue``, its dead-letter queue and its retry queues."""
        out = self.run("ctl", str(via), "-q", "list_queues", "name", "--no-table-headers")
        names = [n for n in out.split() if n == queue or n.startswith(f"{queue}.")]
        with self.channel(via) as channel:
            for name in names:
                channel.queue_delete(name)

    def channel(self, n: int) -> _Channel:
        return _Channel(n)


class _Channel:
    def __init__(self, n: int) -> None:
        self.conn = amqp.Connection(
            f"127.0.0.1:{5700 + n}",
            userid="guest",
            password="guest",  # noqa: S106 - the cluster's loopback-only default user
            connect_timeout=5,
        )

    def __enter__(self) -> Any:
        self.conn.connect()
        return self.conn.channel()

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.close()
        except Exception:
            self.conn.collect()


class SteadyPublisher(threading.Thread):
    """Publishes ``{"id": n}`` every ``interval`` through consumer_host.Publisher on a failover
    URL, until stopped. An id counts as sent once the broker confirmed it; a publish that raised
    is tried again with the same id, so every id from 0 to ``sent - 1`` went out."""

    def __init__(self, url: str, queue: str, *, interval: float = 0.01, **extra: Any) -> None:
        super().__init__(daemon=True, name=f"publisher-{queue}")
        self.url = url
        self.queue = queue
        self.interval = interval
        self.extra = extra
        self.sent_at: dict[int, float] = {}
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def run(self) -> None:
        publisher = Publisher(self.url, connect_timeout=2)
        ident = 0
        try:
            while not self._stop_event.is_set():
                try:
                    publisher.publish(
                        self.queue, {"id": ident, **self.extra}, message_id=str(uuid.uuid4())
                    )
                except BrokerError as exc:
                    self.errors.append(str(exc))
                    self._stop_event.wait(0.05)
                    continue
                self.sent_at[ident] = time.time()
                ident += 1
                self._stop_event.wait(self.interval)
        finally:
            publisher.close()

    def halt(self) -> None:
        self._stop_event.set()
        self.join(30)

    def published_after(self, moment: float) -> list[int]:
        return [ident for ident, at in self.sent_at.items() if at > moment]


class ClusterHost:
    """`consumer-host run` on tests/cluster/amqp_app.py, its JSON log in a file."""

    runs = 0

    def __init__(self, url: str, queue: str, ledger: Ledger, workdir: Path, **env: Any) -> None:
        ClusterHost.runs += 1
        self.out = workdir / f"host-{ClusterHost.runs}.out"
        self.err = workdir / f"host-{ClusterHost.runs}.err"
        variables = {
            **os.environ,
            "CONSUMER_HOST_BROKER_URL": url,
            "CONSUMER_HOST_LOG_FORMAT": "json",
            "CLUSTER_QUEUE": queue,
            "CLUSTER_LEDGER_URL": LEDGER_URL,
            "CLUSTER_LEDGER_KEY": ledger.key,
            **{k: str(v) for k, v in env.items()},
        }
        self.started = time.time()
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [COMMAND, "run", APP], stdout=out, stderr=err, env=variables, cwd=workdir
            )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.out.read_text().splitlines() + self.err.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def connected_nodes(self) -> list[str]:
        """The nodes named by consumer_connected and consumer_reconnected, in order."""
        return [
            e.get("node", "")
            for e in self.events()
            if e.get("event") in {"consumer_connected", "consumer_reconnected"}
        ]

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()


def handled_at(ledger: Ledger) -> dict[int, float]:
    raw = ledger.client.hgetall(f"{ledger.key}:at")
    return {int(k): float(v) for k, v in raw.items()}


def resume_after(ledger: Ledger, publisher: SteadyPublisher, moment: float) -> float:
    """Seconds from ``moment`` to the first handling of a message published after it."""
    after = set(publisher.published_after(moment))
    times = [at for ident, at in handled_at(ledger).items() if ident in after]
    if not times:
        raise AssertionError("no message published after the fault was handled")
    return min(times) - moment


def wait_all_handled(ledger: Ledger, sent: int, timeout: float = 60) -> None:
    wait_until(
        lambda: ledger.handled() >= sent,
        timeout=timeout,
        what=f"all {sent} messages handled (ledger has {ledger.handled()})",
    )


def lost(ledger: Ledger, sent: int) -> list[int]:
    counts = ledger.counts()
    return [ident for ident in range(sent) if ident not in counts]
