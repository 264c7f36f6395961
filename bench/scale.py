"""How cost grows, to size pods from: ``python -m bench.scale [--brokers amqp redis streams]``.

Two tables per broker, each cell a fresh process, queues and keys of its own (deleted after):

* **consumers per process** (1, 10, 100, 500): ``consumer-host run`` with that many idle
  consumer instances on empty queues (up to 10 instances per queue: 1 x 1, 1 x pool 10,
  10 x pool 10, 50 x pool 10). Startup: the command's start to its first 200 from ``/readyz``
  (every instance connected and consuming). RSS and idle CPU (% of one core, utime + stime of the
  process tree over ``--window`` s after start-up). Drain: SIGTERM to exit of the idle host.
* **queued messages per consumer** (1, 100, 10,000): 10 consumers (pool 1) in one host, each
  queue holding that many small JSON messages before the host starts. Throughput: first to last
  handled; drain: host start to the last handled; peak RSS; CPU per message.

Medians of ``--rounds`` rounds; the biggest cells (500 consumers, 10,000 per consumer) run once
(``--big-rounds``), to keep the whole run to a few minutes on a small machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from bench import proctree
from bench.concurrency import ROOT
from bench.idle import URLS, cleanup, reap, sample_then_stop
from bench.restart import free_port

APP = """
from consumer_host import Host, Message
host = Host("scale")
for index in range({queues}):
    host.consumer(f"idle{{index}}", queue=f"{queue}-{{index}}", pool={pool})(lambda message: None)
"""
BACKLOG_CONSUMERS = 10


def layout(consumers: int) -> tuple[int, int]:
    """(queues, pool) for this many instances: up to 10 instances per queue."""
    pool = min(consumers, 10)
    return max(1, consumers // pool), pool


def idle_round(broker: str, consumers: int, window: float) -> dict[str, float]:
    queues, pool = layout(consumers)
    queue = f"bench-scale-{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "scale_app.py"
        app.write_text(APP.format(queues=queues, queue=queue, pool=pool))
        command = [sys.executable, "-m", "consumer_host", "run", str(app), "--broker"]
        command += [URLS[broker], "--health-port", str(port), "--log-level", "warning"]
        started = time.monotonic()
        child = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while not _ready(port):
                if child.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(f"{broker} x {consumers}: the host never became ready")
                time.sleep(0.1)
            startup = time.monotonic() - started
            time.sleep(2.0)  # settled: the first chores after start-up are done
            idle = sample_then_stop(
                child, window, cpu_seconds=_tree_cpu, rss_mb=tree_rss_mb, stop_timeout=60
            )
        finally:
            reap(child)
            cleanup(broker, queue, queues)
    if idle.code != 0:
        raise RuntimeError(f"{broker} x {consumers}: exit {idle.code} after SIGTERM")
    return {"startup": startup, "rss": idle.rss, "cpu": idle.cpu, "drain": idle.drain}


def _tree_cpu(root: int) -> float:
    return proctree.sample(root).cpu_seconds


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return int(reply.status) == 200
    except OSError:
        return False


def tree_rss_mb(root: int) -> float:
    total = 0
    for pid in proctree.tree(root):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(ln.split()[1]) for ln in lines if ln.startswith("VmRSS:"))
    return total / 1024


def backlog_round(broker: str, per_consumer: int) -> dict[str, float]:
    from bench.__main__ import URLS as THROUGHPUT_URLS
    from bench.__main__ import publish, purge

    queue = f"bench-scale-{uuid.uuid4().hex[:8]}"
    names = [f"{queue}-{index}" for index in range(BACKLOG_CONSUMERS)]
    try:
        for name in names:
            publish(broker, name, per_consumer, celery=False)
        command = [sys.executable, "-m", "bench.scale", "--child", THROUGHPUT_URLS[broker]]
        command += [queue, str(per_consumer)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False
        )
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"{broker} backlog {per_consumer}: {result.stderr[-2000:]}")
        report: dict[str, float] = json.loads(lines[-1])
        return report
    finally:
        for name in names:
            purge(broker, name)


def backlog_child(url: str, queue: str, per_consumer: int) -> dict[str, Any]:
    """In the measured process: 10 consumers drain their pre-filled queues."""
    from bench.contestants import Clockwork
    from consumer_host import Host
    from consumer_host.operating.logs import configure_logging
    from consumer_host.transports.broker import BrokerChoice

    configure_logging("json", "warning")  # as `consumer-host run --log-level warning`
    clock = Clockwork(BACKLOG_CONSUMERS * per_consumer)
    host = Host("scale")
    host.use_broker(BrokerChoice(url, "bench"))
    for index in range(BACKLOG_CONSUMERS):
        host.consumer(f"backlog{index}", queue=f"{queue}-{index}")(lambda message: clock.tick())
    began = time.perf_counter()
    host.start()
    if not clock.done.wait(600):
        raise SystemExit(f"handled {clock.count} of {clock.total}")
    drained = time.perf_counter() - began
    report = clock.report() if clock.total > 1 else {"rate": float("nan"), "cpu_per_1000": 0.0}
    host.stop(10)
    return {
        "rate": report["rate"],
        "drain": drained,
        "cpu_ms": report["cpu_per_1000"],
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--brokers", nargs="+", default=list(URLS), choices=list(URLS))
    parser.add_argument("--consumers", nargs="+", type=int, default=[1, 10, 100, 500])
    parser.add_argument("--backlogs", nargs="+", type=int, default=[1, 100, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--child", nargs=3, metavar=("URL", "QUEUE", "PER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, queue, per = args.child
        print(json.dumps(backlog_child(url, queue, int(per))), flush=True)
        return
    print(f"load at the start {os.getloadavg()}", flush=True)
    began = time.monotonic()
    print(
        "| broker | consumers (queues x pool) | startup s | RSS MB | KB per added consumer "
        "| idle CPU % of a core | drain on SIGTERM s | rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for broker in args.brokers:
        first: tuple[int, float] | None = None  # (consumers, RSS) of the smallest cell
        for consumers in args.consumers:
            rounds = args.big_rounds if consumers >= 500 else args.rounds
            cells = [idle_round(broker, consumers, args.window) for _ in range(rounds)]
            queues, pool = layout(consumers)
            med = {key: statistics.median(c[key] for c in cells) for key in cells[0]}
            added = "-"
            if first is None:
                first = (consumers, med["rss"])
            elif consumers > first[0]:
                added = f"{(med['rss'] - first[1]) * 1024 / (consumers - first[0]):,.0f}"
            print(
                f"| {broker} | {consumers} ({queues} x {pool}) | {med['startup']:.1f} "
                f"| {med['rss']:.0f} | {added} | {med['cpu']:.2f} "
                f"| {med['drain']:.2f} | {rounds} |",
                flush=True,
            )
    print()
    print(
        "| broker | queued per consumer (total) | msg/s | drain s (start to last) "
        "| CPU ms / msg | peak RSS MB | rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for broker in args.brokers:
        for per in args.backlogs:
            rounds = args.big_rounds if per >= 10_000 else args.rounds
            cells = [backlog_round(broker, per) for _ in range(rounds)]
            med = {key: statistics.median(c[key] for c in cells) for key in cells[0]}
            total = per * BACKLOG_CONSUMERS
            rate = "-" if med["rate"] != med["rate"] else f"{med['rate']:,.0f}"  # NaN: 1 message
            # CPU time is counted in 10 ms ticks: over a few dozen messages it says nothing.
            cpu = f"{med['cpu_ms']:.3f}" if total >= 100 else "-"
            print(
                f"| {broker} | {per:,} ({total:,}) | {rate} | {med['drain']:.2f} "
                f"| {cpu} | {med['rss']:.0f} | {rounds} |",
                flush=True,
            )
    print(f"\n({time.monotonic() - began:.0f} s; load at the end {os.getloadavg()})")


if __name__ == "__main__":
    main()
