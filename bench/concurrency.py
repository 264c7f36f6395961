"""The concurrency workloads (issue 14): consumer-host's knobs against Dramatiq and Celery threads.

* ``io``: each message sleeps 10 ms and INCRs a Redis key, 64 in flight, on RabbitMQ. The ideal
  for 64 in flight is 6,400 msg/s.
* ``cpu``: each message spins 1 ms of pure Python and INCRs; one process against two.

Every contestant is started by its own command line in a fresh process tree, consumes N
pre-published messages and is stopped with SIGTERM. The handler's INCR is the score: a run counts
only if the total is exactly N after the contestant stopped and the queue is empty (nothing
unacked was left for redelivery); otherwise the row says FAILED and why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kombu import Connection

from bench import proctree
from bench.workload import Run, marks

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
STALL_SECONDS = 60.0  # no progress for this long: the run failed
SETTLE_SECONDS = 1.0  # after the N-th message, time for a duplicate to show


@dataclass(frozen=True)
class Contestant:
    """One row: how to publish for it and how to start it."""

    name: str
    #: "consumer-host", "dramatiq", "celery", "alone" (no broker: the ceiling) or "minimal"
    #: (the least kombu code that does the job: bench/minimal.py, the per-message ceiling)
    kind: str
    style: str = "sync"  # consumer-host: "sync" or "async"
    pool: int = 1
    concurrency: int = 1
    processes: int = 1
    scale: float = 1.0  # share of N it gets (slow contestants: measure the rate, not the total)
    note: str = ""

    def command(self, run: Run) -> list[str]:
        python = [sys.executable, "-m"]
        if self.kind == "consumer-host":
            command = [
                *python,
                "consumer_host",
                "run",
                str(ROOT / "bench" / "host_app.py"),
                "--broker",
                AMQP_URL,
                "--log-level",
                "warning",
                "--log-format",
                "json",
                "--drain-timeout",
                "10",
            ]
            return [*command, "--processes", str(self.processes)] if self.processes > 1 else command
        if self.kind == "alone":
            return [*python, "bench.alone"]
        if self.kind == "minimal":
            return [*python, "bench.minimal"]
        if self.kind == "dramatiq":
            return [
                *python,
                "dramatiq",
                "bench.dramatiq_app",
                "--processes",
                str(self.processes),
                "--threads",
                str(self.concurrency),
            ]
        return [
            *python,
            "celery",
            "-A",
            "bench.celery_threads_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(self.concurrency),
            "-Q",
            run.queue,
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ]

    def env(self, run: Run) -> dict[str, str]:
        return {**run.env(), "BENCH_STYLE": self.style, "BENCH_POOL": str(self.pool)}


@dataclass
class Outcome:
    """What one run measured; ``failure`` is set when the count or the queue was wrong."""

    messages: int
    rate: float = 0.0
    failure: str | None = None
    peak: dict[str, int] = field(default_factory=dict)
    rabbit_connections: int | None = None
    cpu_per_1000: float | None = None
    log_tail: str = ""  # the contestant's last output, when it failed


MINIMAL_ASYNC = "ceiling: minimal kombu + asyncio loop, 64 in flight"
MINIMAL_THREADS = "ceiling: minimal kombu + 64 threads loop"


def io_contestants() -> list[Contestant]:
    return [
        Contestant("no broker: 64 asyncio tasks alone (ceiling)", "alone", "async", 1, 64),
        Contestant("no broker: 64 threads alone (ceiling)", "alone", "sync", 1, 64),
        Contestant(MINIMAL_ASYNC, "minimal", "async", 1, 64),
        Contestant(MINIMAL_THREADS, "minimal", "sync", 1, 64),
        Contestant("consumer-host async, pool 1 x concurrency 64", "consumer-host", "async", 1, 64),
        Contestant("consumer-host sync, pool 1 x concurrency 64", "consumer-host", "sync", 1, 64),
        Contestant(
            "consumer-host sync, pool 64 (the old way)", "consumer-host", "sync", 64, 1, scale=0.5
        ),
        Contestant("Dramatiq 1 process x 64 threads", "dramatiq", concurrency=64, scale=0.5),
        Contestant("Celery --pool threads --concurrency 64", "celery", concurrency=64, scale=0.5),
    ]


def cpu_contestants() -> list[Contestant]:
    return [
        Contestant("consumer-host --processes 1", "consumer-host", processes=1),
        Contestant("consumer-host --processes 2", "consumer-host", processes=2),
        # Dramatiq's default 8 threads: with 1 its prefetch is 2 and it waits on round trips.
        Contestant("Dramatiq 1 process x 8 threads", "dramatiq", concurrency=8, processes=1),
        Contestant("Dramatiq 2 processes x 8 threads", "dramatiq", concurrency=8, processes=2),
    ]


def processes_supported() -> bool:
    """Whether this checkout's ``consumer-host run`` has ``--processes`` yet."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer_host", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return "--processes" in result.stdout


def publish(contestant: Contestant, run: Run) -> None:
    """N messages in the form the contestant reads, on a queue only this run uses."""
    if contestant.kind == "alone":
        return
    if contestant.kind == "dramatiq":
        from dramatiq import Message

        from bench.dramatiq_app import make_broker

        broker = make_broker()
        try:
            broker.declare_queue(run.queue)
            for _ in range(run.total):
                broker.enqueue(Message(run.queue, "bench_work", (), {}, {}))
        finally:
            broker.close()
        return
    if contestant.kind == "celery":
        from bench.celery_threads_app import TASK, app

        with app.producer_or_acquire() as producer:
            for _ in range(run.total):
                app.send_task(TASK, queue=run.queue, producer=producer)
        return
    from kombu import Exchange, Producer, Queue

    with Connection(AMQP_URL) as conn:
        channel = conn.channel()
        Queue(run.queue, Exchange(""), routing_key=run.queue, durable=True).bind(channel).declare()
        producer = Producer(channel)
        for index in range(run.total):
            producer.publish(
                {"id": index}, exchange="", routing_key=run.queue, serializer="json", retry=False
            )


def left_in_queue(queue: str) -> int:
    """Messages ready or unacked on ``queue`` (0 if it was never declared)."""
    with Connection(AMQP_URL) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)


def purge(run: Run, client: redis.Redis) -> None:
    """Delete what this run made: its queues (Dramatiq's .DQ/.XQ, our .dlq) and its keys."""
    client.delete(run.key, *(f"{run.key}:{name}" for name in marks(run.total).values()))
    with Connection(AMQP_URL) as conn:
        for name in (run.queue, f"{run.queue}.dlq", f"{run.queue}.DQ", f"{run.queue}.XQ"):
            try:
                conn.channel().queue_delete(name)
            except Exception:
                continue


def rabbit_connections(local_ports: set[int]) -> int | None:
    """RabbitMQ's own count of the connections coming from these client ports."""
    try:
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "peer_port"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    ports = {int(line) for line in listing.split() if line.strip().isdigit()}
    return len(ports & local_ports)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (each contestant drains on it), then SIGKILL the whole group if it hangs."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def run_once(contestant: Contestant, total: int, work: str) -> Outcome:
    run = Run(
        queue=f"bench-cc-{uuid.uuid4().hex[:8]}",
        key=f"bench-cc:{uuid.uuid4().hex}",
        total=total,
        work=work,
        redis_url=REDIS_URL,
        concurrency=contestant.concurrency,
    )
    client = redis.Redis.from_url(REDIS_URL)
    outcome = Outcome(messages=total)
    try:
        with tempfile.TemporaryFile() as log:
            try:
                publish(contestant, run)
                process = subprocess.Popen(
                    contestant.command(run),
                    cwd=ROOT,
                    env={**os.environ, **contestant.env(run)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                try:
                    watch(process, run, client, outcome)
                finally:
                    stop(process)
                judge(contestant, run, client, outcome)
            except Exception as exc:
                outcome.failure = f"{type(exc).__name__}: {exc}"
            if outcome.failure:
                log.seek(0)
                outcome.log_tail = log.read()[-800:].decode(errors="replace")
    finally:
        purge(run, client)
    return outcome


def watch(
    process: subprocess.Popen[bytes], run: Run, client: redis.Redis, outcome: Outcome
) -> None:
    """Poll the tally and the process tree until N are handled, the run stalls, or it dies."""
    peak = {"processes": 0, "threads": 0, "amqp": 0, "redis": 0}
    progress, last_count, cpu_start = time.monotonic(), 0, None
    while True:
        shot = proctree.sample(process.pid)
        count = int(client.get(run.key) or 0)
        for name, value in (
            ("processes", shot.processes),
            ("threads", shot.threads),
            ("amqp", shot.count(proctree.AMQP_PORT)),
            ("redis", shot.count(proctree.REDIS_PORT)),
        ):
            peak[name] = max(peak[name], value)
        if count and cpu_start is None:
            cpu_start = (count, shot.cpu_seconds)
        if count >= run.total:
            if cpu_start is not None and count > cpu_start[0] and shot.processes:
                spent = shot.cpu_seconds - cpu_start[1]
                outcome.cpu_per_1000 = spent / (count - cpu_start[0]) * 1000
            outcome.rabbit_connections = rabbit_connections(
                shot.connections.get(proctree.AMQP_PORT, set())
            )
            break
        if count != last_count:
            progress, last_count = time.monotonic(), count
        if process.poll() is not None and int(client.get(run.key) or 0) < run.total:
            raise RuntimeError(f"the contestant exited with {process.returncode} at {count}")
        if time.monotonic() - progress > STALL_SECONDS:
            raise RuntimeError(f"no progress for {STALL_SECONDS:.0f} s at {count}/{run.total}")
        time.sleep(0.25)
    outcome.peak = peak
    time.sleep(SETTLE_SECONDS)


def judge(contestant: Contestant, run: Run, client: redis.Redis, outcome: Outcome) -> None:
    """Exactly N handled and nothing left on the queue, or the run failed."""
    count = int(client.get(run.key) or 0)
    stamps = {name: client.get(f"{run.key}:{name}") for name in ("p10", "p90")}
    left = 0 if contestant.kind == "alone" else left_in_queue(run.queue)
    if count != run.total:
        outcome.failure = f"handled {count} of {run.total}"
    elif left:
        outcome.failure = f"{left} messages left on the queue after stop"
    elif None in stamps.values():
        outcome.failure = "no 10 % / 90 % stamps"
    else:
        count_at = {name: mark for mark, name in marks(run.total).items()}
        seconds = float(stamps["p90"] or 0) - float(stamps["p10"] or 0)
        handled = count_at["p90"] - count_at["p10"]
        outcome.rate = handled / seconds if seconds > 0 else float("inf")
