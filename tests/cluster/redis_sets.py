"""What the Redis cluster tests share: the Sentinel set and the Redis Cluster started by
scripts/redis-clusters.sh, a steady publisher, the host as a real `consumer-host run`
subprocess, the ledger, and the figures each case records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from consumer_host.errors import BrokerError
from consumer_host.transports.redis_producers import RedisListProducer, StreamsProducer
from tests.brokers import redis_url
from tests.helpers import COMMAND, wait_until

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "redis-clusters.sh"
APP = str(Path(__file__).parent / "redis_app.py")
LEDGER_URL = redis_url(db=15)
RESULTS = Path(os.environ.get("CLUSTER_RESULTS", ROOT / ".cluster-results.jsonl"))
SENTINEL_URL = "redis://127.0.0.1:26401,127.0.0.1:26402,127.0.0.1:26403/0?sentinel=chmain"
CLUSTER_PORTS = (7001, 7002, 7003, 7004, 7005, 7006)
CLUSTER_URL = "redis://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003/0?cluster=true"


def script(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"redis-clusters.sh {' '.join(args)}: {done.stderr}"
    return done.stdout


def node(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)


def sentinel_primary() -> int:
    return int(script("primary").strip())


def cluster_primary_of(queue: str) -> int:
    """The port of the primary that serves ``queue``'s slot now."""
    slot = key_slot(queue.encode())
    for port in CLUSTER_PORTS:  # ask any node still alive
        try:
            ranges = node(port).execute_command("CLUSTER SLOTS")
        except redis.RedisError:
            continue
        for start, end, primary, *_ in ranges:
            if start <= slot <= end:
                return int(primary[1])
    raise AssertionError(f"slot {slot} is not served")


def synced(primary: int) -> bool:
    """Whether ``primary`` has a replica online that holds every write it acknowledged."""
    try:
        info = node(primary).info("replication")
    except redis.RedisError:
        return False
    offset = info.get("master_repl_offset")
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return any(r.get("state") == "online" and r.get("offset") == offset for r in replicas)


def record(case: str, **figures: object) -> None:
    """Append this run's figures, for docs/RELIABILITY.md and README."""
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"case": case, **figures}) + "\n")


@dataclass
class Run:
    """One case: its queue, ledger, publisher thread and host process."""

    url: str
    streams: bool = False
    queue: str = field(default_factory=lambda: f"cl-{uuid.uuid4().hex[:8]}")
    published: list[int] = field(default_factory=list)
    publish_errors: int = 0
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    _pause: threading.Event = field(default_factory=threading.Event)
    _paused: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def broker(self) -> str:
        return self.url.replace("redis://", "redis+streams://") if self.streams else self.url

    @property
    def key(self) -> str:
        return f"cluster-ledger:{self.queue}"

    # -- the host ----------------------------------------------------------------------------------

    def start_host(self, workdir: Path) -> None:
        self.workdir = workdir
        env = {
            **os.environ,
            "CLUSTER_BROKER": self.broker,
            "CLUSTER_QUEUE": self.queue,
            "CLUSTER_LEDGER_URL": LEDGER_URL,
            "CLUSTER_LEDGER_KEY": self.key,
            "CONSUMER_HOST_HEALTH_PORT": "0",
        }
        with (workdir / "host.out").open("ab") as out, (workdir / "host.err").open("ab") as err:
            self.process = subprocess.Popen(
                [COMMAND, "run", APP], stdout=out, stderr=err, env=env, cwd=workdir
            )

    def kill_host(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop_host(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    # -- the publisher -----------------------------------------------------------------------------

    def start_publishing(self, per_second: float = 100.0) -> None:
        self._thread = threading.Thread(target=self._publish, args=(per_second,), daemon=True)
        self._thread.start()

    def _publish(self, per_second: float) -> None:
        kind = StreamsProducer if self.streams else RedisListProducer
        producer = None
        ident = 0
        while not self._stop.is_set():
            if self._pause.is_set():
                self._paused.set()
                time.sleep(0.001)
                continue
            try:
                producer = producer or kind(self.broker, connect_timeout=1.0)
                producer.publish(
                    self.queue,
                    json.dumps({"id": ident}).encode(),
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers={},
                    message_id=str(ident),
                )
            except BrokerError:
                # Not acknowledged: published again under the same id (a duplicate at worst).
                self.publish_errors += 1
                if producer is not None:
                    producer.close()
                producer = None
                time.sleep(0.05)
                continue
            self.published.append(ident)
            ident += 1
            time.sleep(1 / per_second)
        if producer is not None:
            producer.close()

    def quiesce(self) -> None:
        """Hold the publisher for the moment a node is killed: so that the replica holds every
        write the publisher counts (Redis replicates asynchronously; see README)."""
        self._paused.clear()
        self._pause.set()
        wait_until(self._paused.is_set, 10, "the publisher to pause")

    def resume(self) -> None:
        self._pause.clear()

    def stop_publishing(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    # -- the ledger --------------------------------------------------------------------------------

    def ledger(self) -> redis.Redis:
        return redis.Redis.from_url(LEDGER_URL)

    def handled(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.ledger().hgetall(self.key).items()}

    def first_handled_after(self, moment: float) -> float | None:
        times = [float(v) for v in self.ledger().hvals(f"{self.key}:at")]
        later = [t for t in times if t > moment]
        return min(later) if later else None

    def wait_handling(self, timeout: float = 60) -> None:
        count = len(self.handled())
        try:
            wait_until(lambda: len(self.handled()) > count + 20, timeout, "the host to handle")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the host's stderr ends:\n{self.log_tail()}") from None

    def log_tail(self) -> str:
        if self.workdir is None:
            return ""
        lines = []
        for name in ("host.err", "host.out"):
            path = self.workdir / name
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(line[:300] for line in lines)

    def wait_all_handled(self, timeout: float = 60) -> None:
        try:
            wait_until(
                lambda: set(self.published) <= set(self.handled()), timeout, "every message handled"
            )
        except AssertionError as exc:
            missing = sorted(set(self.published) - set(self.handled()))
            raise AssertionError(
                f"{exc}: {len(missing)} of {len(self.published)} missing, first {missing[:10]}; "
                f"the host's output ends:\n{self.log_tail()}"
            ) from None

    def cleanup(self) -> None:
        self.ledger().delete(self.key, f"{self.key}:at")


def wait_promoted(old: int, current: Callable[[], int], timeout: float = 30) -> float:
    """Wait until ``current()`` names another primary than ``old``; the wall time it did."""
    wait_until(lambda: _changed(old, current), timeout, f"a replica of {old} to be promoted")
    return time.time()


def _changed(old: int, current: Callable[[], int]) -> bool:
    try:
        return current() != old
    except (redis.RedisError, AssertionError, ValueError):
        return False
