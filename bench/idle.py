"""What idle consumers cost: ``python -m bench.idle [--brokers amqp redis streams]``.

Starts ``consumer-host run`` with C consumers x pool P on empty queues of its own, lets it settle,
then measures, per broker: the host's CPU as % of one core over a window (utime + stime from
/proc), RSS, how long a message published to an idle queue takes to reach its handler, and how
long the idle host takes to exit after SIGTERM. Median of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import redis

from bench.concurrency import AMQP_URL, REDIS_URL, ROOT

URLS = {
    "amqp": AMQP_URL,
    "redis": REDIS_URL,
    "streams": REDIS_URL.replace("redis://", "redis+streams://"),
}

APP = """
import time, redis
from consumer_host import Host, Message
host = Host("idle")
marks = redis.Redis.from_url({redis_url!r})
for index in range({consumers}):
    def handle(message: Message, index=index) -> None:
        marks.rpush({key!r}, repr(time.time() - float(message.body["sent"])))
    host.consumer(f"idle{{index}}", queue=f"{queue}-{{index}}", pool={pool})(handle)
"""

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_round(
    broker: str, consumers: int, pool: int, settle: float, window: float, code_root: str | None
) -> dict:
    url = URLS[broker]
    tag = uuid.uuid4().hex[:8]
    queue = f"bench-idle-{tag}"
    key = f"bench-idle-{tag}:latency"
    marks = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "idle_app.py"
        app.write_text(
            APP.format(redis_url=REDIS_URL, consumers=consumers, key=key, queue=queue, pool=pool)
        )
        env = {**os.environ, "CONSUMER_HOST_LOG_LEVEL": "warning"}
        if code_root:  # another checkout's consumer_host (a before/after comparison)
            env["PYTHONPATH"] = code_root
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "consumer_host", "run", str(app), "--broker", url],
            cwd=code_root or ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            latencies = _latencies(url, f"{queue}-0", marks, key, settle)
            startup = time.monotonic() - started
            time.sleep(1.0)
            idle = sample_then_stop(
                child, window, cpu_seconds=cpu_seconds, rss_mb=rss_mb, stop_timeout=30
            )
        finally:
            reap(child)
            _cleanup(broker, queue, consumers, marks, key)
    return {
        "cpu": idle.cpu,
        "rss": idle.rss,
        "pickup": statistics.median(latencies),
        "sigterm": idle.drain,
        "exit": idle.code,
        "startup": startup,
    }


class IdleSample(NamedTuple):
    cpu: float
    """% of one core over the window."""
    rss: float
    """MB at the window's end."""
    code: int
    """The exit code after SIGTERM."""
    drain: float
    """Seconds from SIGTERM to exit."""


def sample_then_stop(
    child: subprocess.Popen[bytes],
    window: float,
    *,
    cpu_seconds: Callable[[int], float],
    rss_mb: Callable[[int], float],
    stop_timeout: float,
) -> IdleSample:
    """An idle host's CPU over ``window`` s and its RSS, as ``cpu_seconds`` and ``rss_mb`` read
    them for its pid (the process alone, or its tree); then SIGTERM, and how long it took."""
    before, t0 = cpu_seconds(child.pid), time.monotonic()
    time.sleep(window)
    cpu = (cpu_seconds(child.pid) - before) / (time.monotonic() - t0) * 100
    rss = rss_mb(child.pid)
    term = time.monotonic()
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=stop_timeout)
    return IdleSample(cpu=cpu, rss=rss, code=code, drain=time.monotonic() - term)


def reap(child: subprocess.Popen[bytes]) -> None:
    """Kill ``child`` if a failed round left it running."""
    if child.poll() is None:
        child.kill()
        child.wait()


def _latencies(url: str, queue: str, marks: redis.Redis, key: str, settle: float) -> list[float]:
    """Publish to an idle queue (after ``settle`` s) and read back how late the handler saw it."""
    from consumer_host.transports.choose import producer_for

    time.sleep(settle)
    producer = producer_for(url)
    found: list[float] = []
    try:
        for _ in range(5):
            time.sleep(1.5)  # the consumer is back to waiting idle
            body = json.dumps({"sent": time.time()}).encode()
            producer.publish(
                queue,
                body,
                content_type="application/json",
                content_encoding="utf-8",
                headers={},
                message_id=uuid.uuid4().hex,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = marks.lpop(key)
                if got is not None:
                    found.append(float(got))
                    break
                time.sleep(0.01)
    finally:
        producer.close()
    return found or [float("nan")]


def _cleanup(broker: str, queue: str, consumers: int, marks: redis.Redis, key: str) -> None:
    marks.delete(key)
    cleanup(broker, queue, consumers)


def cleanup(broker: str, queue: str, count: int) -> None:
    """Delete ``queue-0`` .. ``queue-{count-1}``, their dead letters and consumer-host's keys."""
    names = [f"{queue}-{index}" for index in range(count)]
    if broker == "amqp":
        from kombu import Connection

        with Connection(AMQP_URL) as conn:
            for name in names:
                for each in (name, f"{name}.dlq"):
                    try:
                        conn.channel().queue_delete(each)
                    except Exception:
                        continue
        return
    marks = redis.Redis.from_url(REDIS_URL)
    for name in names:
        marks.delete(name, f"{name}.dlq")
        for found in marks.scan_iter(f"consumer-host:{name}:*"):
            marks.delete(found)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle")
    parser.add_argument("--brokers", nargs="+", default=list(URLS), choices=list(URLS))
    parser.add_argument("--consumers", type=int, default=20)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument(
        "--compare", metavar="DIR", help="also run the consumer_host of this checkout, interleaved"
    )
    args = parser.parse_args()
    total = args.consumers * args.pool
    print(f"{total} idle consumers ({args.consumers} x pool {args.pool}); load {os.getloadavg()}")
    print(
        "| broker | CPU % of a core | per consumer | RSS MB | per consumer KB | pickup ms | "
        "SIGTERM to exit s | startup s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    roots = [("this checkout", None)] + ([(args.compare, args.compare)] if args.compare else [])
    for broker in args.brokers:
        results: dict[str, list[dict]] = {label: [] for label, _ in roots}
        for _ in range(args.rounds):  # interleaved, so both see the same load
            for label, code_root in roots:
                results[label].append(
                    one_round(
                        broker, args.consumers, args.pool, args.settle, args.window, code_root
                    )
                )
        for label, rounds in results.items():
            _row(f"{broker} ({label})" if args.compare else broker, rounds, total)
    print(f"load at the end {os.getloadavg()}")


def _row(name: str, rounds: list[dict], total: int) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    cpus = ", ".join(f"{r['cpu']:.1f}" for r in rounds)
    print(
        f"| {name} | {med('cpu'):.2f} ({cpus}) | {med('cpu') / total * 1000:.1f} m% | "
        f"{med('rss'):.0f} | {med('rss') * 1024 / total:.0f} | {med('pickup') * 1000:.0f} | "
        f"{med('sigterm'):.2f} (exit {max(r['exit'] for r in rounds)}) | {med('startup'):.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
