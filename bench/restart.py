"""Throughput after a restart, as a ratio of the rate before (issue 23).

    python -m bench.restart [--code DIR] [--backlog N]

For a classic and a quorum queue on RabbitMQ: a host (``consumer-host run bench/restart_app.py``:
concurrency 32, a 0-0.4 s handler) works through a backlog; the rate over the 4 s before each
event is compared with the rate over [2 s, 5 s] after the host is consuming again:

- graceful: SIGTERM (drain: what was prefetched is given back), then a fresh process;
- pause -> resume: 2 s paused (what was prefetched is given back), then resume;
- SIGKILL: the process dies with 32 messages in handlers and more prefetched; a fresh process
  (also measured over [5 s, 8 s], the issue's bound after a SIGKILL).

``--code DIR`` runs another checkout's consumer_host (e.g. the main branch) for a comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from kombu import Connection, Producer

AMQP_URL = os.environ.get("CONSUMER_HOST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
APP = Path(__file__).with_name("restart_app.py")
TOKEN = "restart-bench"  # noqa: S105 - the bench host's own control token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, quorum: bool, code: str | None, backlog: int) -> None:
        self.queue = f"restart-bench-{uuid.uuid4().hex[:8]}"
        self.ledger = Path(tempfile.mkdtemp()) / "ledger"
        self.port = free_port()
        self.env = {
            **os.environ,
            "BENCH_QUEUE": self.queue,
            "BENCH_LEDGER": str(self.ledger),
            "CONSUMER_HOST_BROKER_URL": AMQP_URL,
            "CONSUMER_HOST_CONTROL_TOKEN": TOKEN,
            **({"BENCH_QUORUM": "1"} if quorum else {}),
            **({"PYTHONPATH": code} if code else {}),
        }
        self.backlog = backlog
        self.process: subprocess.Popen[bytes] | None = None

    def publish(self) -> None:
        with Connection(AMQP_URL) as conn:
            producer = Producer(conn.default_channel)
            for n in range(self.backlog):
                producer.publish({"n": n}, routing_key=self.queue, serializer="json")

    def start(self) -> float:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "consumer_host",
                "run",
                str(APP),
                "--health-port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            cwd=self.ledger.parent,  # not this checkout: ``-m`` would put it before --code
        )
        while not self.ready():
            time.sleep(0.05)
        return time.time()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def control(self, path: str) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310

    def rate(self, start: float, end: float) -> float:
        stamps = [float(line) for line in self.ledger.read_text().split()]
        return sum(1 for t in stamps if start <= t < end) / (end - start)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.process.wait(60)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        with Connection(AMQP_URL) as conn:
            conn.default_channel.queue_delete(self.queue)


def measure(quorum: bool, code: str | None, backlog: int) -> dict[str, float]:
    bench = Bench(quorum, code, backlog)
    bench.start()  # declares the queue (quorum or classic) before the backlog is published
    bench.publish()
    figures: dict[str, float] = {}
    try:
        time.sleep(6)
        before = bench.rate(time.time() - 4, time.time())
        figures["before msg/s"] = round(before, 1)
        bench.stop()
        back = bench.start()
        time.sleep(5.2)
        figures["graceful"] = round(bench.rate(back + 2, back + 5) / before, 2)

        time.sleep(3)
        before = bench.rate(time.time() - 4, time.time())
        bench.control("/consumers/work/pause")
        time.sleep(2)
        bench.control("/consumers/work/resume")
        back = time.time()
        time.sleep(5.2)
        figures["pause->resume"] = round(bench.rate(back + 2, back + 5) / before, 2)

        time.sleep(3)
        before = bench.rate(time.time() - 4, time.time())
        bench.stop(signal.SIGKILL)
        back = bench.start()
        time.sleep(8.2)
        figures["SIGKILL [2,5] s"] = round(bench.rate(back + 2, back + 5) / before, 2)
        figures["SIGKILL [5,8] s"] = round(bench.rate(back + 5, back + 8) / before, 2)
        bench.stop()
    finally:
        bench.cleanup()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", help="PYTHONPATH of another checkout to measure")
    parser.add_argument("--backlog", type=int, default=8000)
    args = parser.parse_args()
    for quorum in (False, True):
        figures = measure(quorum, args.code, args.backlog)
        print(json.dumps({"queue": "quorum" if quorum else "classic", **figures}), flush=True)


if __name__ == "__main__":
    main()
