"""``python -m bench``: raw kombu, consumer-host and Celery side by side, on RabbitMQ and Redis.

Every contestant consumes the same N pre-published small JSON messages (Celery: N tasks of the
same size) in a fresh process, in three interleaved rounds; the table shows the median rate with
min and max, CPU ms per message and peak RSS, the ratios to the raw loops (the ceiling rows), and
it is written to bench/RESULTS.md.
The concurrency workloads (bench/concurrency.py) put consumer-host's ``concurrency`` and
``--processes`` against Dramatiq and Celery threads on an I/O-bound and a CPU-bound handler.

    python -m bench                 # every workload: throughput (N=20000), io, cpu
    python -m bench --workload throughput --n 5000 --brokers amqp
    python -m bench --workload io --io-n 4000 --repeats 1
    python -m bench --workload cpu

Each workload rewrites only its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kombu
import redis
from kombu import Connection, Exchange, Producer, Queue

import consumer_host

HERE = Path(__file__).parent
URLS = {
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
    "redis": "redis://127.0.0.1:6379/0",
    "streams": "redis+streams://127.0.0.1:6379/0",
}
PREFETCH = 100
BODY = {"id": 0, "order": "A-1000", "amount": 12.5, "items": [1, 2, 3]}


#: The leanest hand-written loop on each broker: the ceiling rows our rows are divided by.
LEANEST = {
    "amqp": "ceiling: raw py-amqp, ack(multiple) per 50",
    "redis": "ceiling: raw redis-py BLMOVE + LMOVE batch + LREM",
    "streams": "ceiling: raw redis-py XREADGROUP + XACK",
}
#: The same Redis loops with redis-py's pure-Python reply parser (plain ``pip install redis``;
#: the ceilings parse with hiredis, as consumer-host does).
PURE_PARSER = " (pure-Python parser)"


def contestants(broker: str) -> list[tuple[str, list[str]]]:
    if broker == "streams":
        return [
            (LEANEST["streams"], ["raw-streams"]),
            (LEANEST["streams"] + PURE_PARSER, ["raw-streams-pure"]),
            ("consumer-host pool 1", ["consumer-host", "1", "coalesce"]),
            ("consumer-host pool 4", ["consumer-host", "4", "coalesce"]),
        ]
    rows = [("raw kombu", ["raw-kombu"])]
    if broker == "amqp":
        rows.append((LEANEST["amqp"], ["raw-pyamqp"]))
    else:
        rows.append((LEANEST["redis"], ["raw-lists"]))
        rows.append((LEANEST["redis"] + PURE_PARSER, ["raw-lists-pure"]))
    rows += [
        ("consumer-host pool 1", ["consumer-host", "1", "per-message"]),
        ("consumer-host pool 4", ["consumer-host", "4", "per-message"]),
    ]
    if broker == "amqp":
        rows += [
            ("consumer-host pool 1, coalesced acks", ["consumer-host", "1", "coalesce"]),
            ("consumer-host pool 4, coalesced acks", ["consumer-host", "4", "coalesce"]),
        ]
    return [
        *rows,
        ("Celery solo, acks_late", ["celery"]),
        ("Celery client -> consumer-host celery_task", ["consumer-host-celery"]),
    ]


def publish(broker: str, queue: str, n: int, celery: bool) -> None:
    url = URLS[broker]
    if broker == "streams":
        from consumer_host.transports.redis_streams import entry_fields

        client = redis.Redis.from_url(URLS["redis"])
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            body = json.dumps({**BODY, "id": i}).encode()
            pipe.xadd(queue, entry_fields(body, "application/json", "utf-8", {}, str(i)))
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
        return
    if celery:
        from bench.celery_app import make_app

        app = make_app(url, PREFETCH)
        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task("bench.noop", args=[i], queue=queue, producer=producer)
        return
    with Connection(url) as conn:
        channel = conn.channel()
        declared = Queue(queue, Exchange(""), routing_key=queue, durable=True)
        declared.bind(channel).declare()
        producer = Producer(channel)
        for i in range(n):
            producer.publish(
                {**BODY, "id": i},
                exchange="",
                routing_key=queue,
                serializer="json",
                delivery_mode=2,
                retry=False,
            )


def purge(broker: str, queue: str) -> None:
    if broker in ("redis", "streams"):
        client = redis.Redis.from_url(URLS["redis"])
        client.delete(
            queue,
            f"{queue}.dlq",
            *client.keys(f"consumer-host:{queue}:*"),
            *client.keys(f"_kombu.binding.{queue}"),
            "unacked",
            "unacked_index",
        )
        return
    with Connection(URLS[broker]) as conn:
        for name in (queue, f"{queue}.dlq"):
            try:
                conn.channel().queue_delete(name)
            except Exception:
                continue


def run_one(broker: str, args: list[str], n: int) -> dict[str, Any]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        publish(broker, queue, n, celery=args[0] in ("celery", "consumer-host-celery"))
        command = [
            sys.executable,
            "-m",
            "bench.contestants",
            args[0],
            URLS[broker],
            queue,
            str(n),
            str(PREFETCH),
            *args[1:],
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=300, cwd=HERE.parent, check=False
        )
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"{args} failed: {result.stderr[-2000:]}")
        return json.loads(lines[-1])
    finally:
        purge(broker, queue)


def measure(brokers: list[str], n: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Rounds interleaved per broker (every contestant once, then again): a burst of load from
    elsewhere on the shared machine lands on every row alike, so the ratios hold."""
    results: dict[str, list[dict[str, Any]]] = {}
    for broker in brokers:
        for _ in range(repeats):
            for name, args in contestants(broker):
                run = run_one(broker, args, n)
                results.setdefault(f"{broker}|{name}", []).append(run)
                print(
                    f"  {broker:7} {name:44} {run['rate']:>9.0f} msg/s "
                    f"{run['cpu_per_1000']:.3f} ms CPU/msg",
                    flush=True,
                )
    return results


def summarize(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for key, runs in results.items():
        broker, name = key.split("|")
        rates = [r["rate"] for r in runs]
        rows.append(
            {
                "broker": broker,
                "name": name,
                "rate": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "cpu": statistics.median(r["cpu_per_1000"] for r in runs),
                "rss": max(r["peak_rss_mb"] for r in runs),
            }
        )
    for row in rows:
        peers = {r["name"]: r for r in rows if r["broker"] == row["broker"]}
        kombu_row = peers.get("raw kombu") or peers.get(LEANEST["streams"])
        leanest = peers.get(LEANEST[row["broker"]])
        celery = peers.get("Celery solo, acks_late")
        row["vs_raw"] = row["rate"] / kombu_row["rate"] if kombu_row else None
        row["vs_leanest"] = row["rate"] / leanest["rate"] if leanest else None
        row["cpu_vs_leanest"] = row["cpu"] / leanest["cpu"] if leanest and leanest["cpu"] else None
        row["vs_celery"] = row["rate"] / celery["rate"] if celery else None
    return rows


def measure_idle(broker: str) -> dict[str, Any]:
    queue = f"idle-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable,
        "-m",
        "bench.contestants",
        "idle",
        URLS[broker],
        queue,
        "10",
        "0",
        "10",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=HERE.parent, check=False
    )
    for index in range(10):
        purge(broker, f"{queue}-{index}")
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"idle host failed: {result.stderr[-2000:]}")
    return {"broker": broker, **json.loads(lines[-1])}


def measure_sigterm(broker: str) -> dict[str, Any]:
    """SIGTERM while a 2 s handler is 0.5 s in: how long past the handler's end until exit."""
    queue = f"term-{uuid.uuid4().hex[:6]}"
    app = HERE / "sigterm_app.py"
    publish(broker, queue, 5, celery=False)
    env = {
        **os.environ,
        "CONSUMER_HOST_BROKER_URL": URLS[broker],
        "BENCH_QUEUE": queue,
        "CONSUMER_HOST_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer_host", "run", str(app)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=HERE.parent,
    )
    try:
        assert process.stdout is not None
        while "handler started" not in process.stdout.readline():
            pass
        threading.Event().wait(0.5)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        after = time.monotonic() - sent - 1.5  # the handler had 1.5 s left
    finally:
        purge(broker, queue)
    return {"broker": broker, "exit_code": code, "seconds_after_handler": after}


def render(rows: list[dict[str, Any]], n: int, repeats: int) -> str:
    versions = {
        "consumer-host": consumer_host.__version__,
        "kombu": kombu.__version__,
        "redis-py": redis.__version__,
        "python": platform.python_version(),
    }
    try:
        import celery

        versions["celery"] = celery.__version__
    except ImportError:
        pass
    lines = [
        "# Benchmark results",
        "",
        f"`python -m bench --n {n}` on {datetime.now(UTC):%Y-%m-%d}, "
        f"{platform.machine()}, {platform.system()}; brokers on the same machine (loopback).",
        f"Each figure: median of {repeats} interleaved rounds (every contestant once per round) "
        f"of {n:,} small JSON messages (min and max in brackets), prefetch 100, counted from the "
        f"first handled message to the last; load average at the end {_load()} (2 cores shared "
        "with both brokers and other work).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        "| broker | contestant | msg/s (min-max) | CPU ms / msg | peak RSS MB "
        "| rate vs raw kombu | rate vs ceiling | CPU vs ceiling | rate vs Celery |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['broker']} | {r['name']} | {r['rate']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) "
            f"| {r['cpu']:.3f} | {r['rss']:.0f} | {_times(r['vs_raw'])} "
            f"| {_times(r['vs_leanest'])} | {_times(r['cpu_vs_leanest'])} "
            f"| {_times(r['vs_celery'])} |"
        )
    rate = {(r["broker"], r["name"]): r["rate"] for r in rows}
    streams = rate.get(("streams", "consumer-host pool 1"))
    kombu_redis = rate.get(("redis", "raw kombu"))
    if streams and kombu_redis:
        lines += [
            "",
            f"Redis Streams through consumer-host (pool 1) against kombu's Redis "
            f"transport (the raw kombu loop on Redis): {streams / kombu_redis:.1f}x.",
        ]
    lines += [
        "",
        "CPU ms / msg: the contestant's process (every thread) from its first handled message "
        "to its N-th, user + system time (start-up excluded) divided by N. The ceiling rows "
        "are the leanest loops a user could write by hand on each broker: py-amqp's "
        "`basic_consume` acking with `multiple=True` once per 50 messages on RabbitMQ, a "
        "redis-py `BLMOVE` to a processing list plus up to 99 pipelined `LMOVE`s, then one "
        "pipeline of `LREM`s per batch on Redis lists, a "
        "redis-py `XREADGROUP` of 100 and one `XACK` per batch on Streams; every raw loop "
        "decodes the JSON body as consumer-host does. On Streams raw kombu has no loop (kombu "
        "does not speak Streams), so 'vs raw kombu' is against the XREADGROUP loop. Every "
        "redis-py client here parses replies with hiredis, which consumer-host installs; the "
        "rows marked '(pure-Python parser)' run the same loops with redis-py's own parser, "
        "what a plain `pip install redis` gives.",
    ]
    return "\n".join(lines) + "\n"


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def render_costs(idle: list[dict[str, Any]], sigterm: list[dict[str, Any]]) -> str:
    lines = [
        "",
        "## Idle cost and shutdown",
        "",
        "| broker | 10 idle consumers: CPU % of a core | peak RSS MB "
        "| SIGTERM to exit, past the in-flight handler's end |",
        "| --- | --- | --- | --- |",
    ]
    for cost, term in zip(idle, sigterm, strict=True):
        lines.append(
            f"| {cost['broker']} | {cost['cpu_percent']:.2f} | "
            f"{cost['peak_rss_mb']:.0f} | {term['seconds_after_handler']:.2f} s "
            f"(exit {term['exit_code']}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--brokers", nargs="+", default=list(URLS), choices=list(URLS))
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--workload", choices=WORKLOADS, default="all")
    parser.add_argument("--io-n", type=int, default=20_000, help="messages per I/O-bound run")
    parser.add_argument("--cpu-n", type=int, default=5_000, help="messages per CPU-bound run")
    args = parser.parse_args()
    began = time.monotonic()
    workloads = WORKLOADS[1:] if args.workload == "all" else (args.workload,)
    for workload in workloads:
        print(f"{workload}:", flush=True)
        if workload == "throughput":
            rows = summarize(measure(args.brokers, args.n, args.repeats))
            costed = [b for b in args.brokers if b != "streams"]
            idle = [measure_idle(broker) for broker in costed]
            sigterm = [measure_sigterm(broker) for broker in costed]
            section = render(rows, args.n, args.repeats) + render_costs(idle, sigterm)
        else:
            from bench import concurrency_report

            n = args.io_n if workload == "io" else args.cpu_n
            measured = concurrency_report.measure(workload, n, args.repeats)
            when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            section = concurrency_report.render(workload, measured, n, args.repeats, when)
        write_section(args.out, workload, section)
        print()
        print(section)
    print(f"({time.monotonic() - began:.0f} s; written to {args.out})")


WORKLOADS = ("all", "throughput", "io", "cpu")


def write_section(path: Path, workload: str, text: str) -> None:
    """Replace one workload's section of RESULTS.md, keeping the others' figures."""
    begin, end = f"<!-- bench:{workload} -->", f"<!-- /bench:{workload} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else ""
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        updated = head + block + ("\n" + tail if tail else "")
    elif workload == "throughput":
        updated = block + ("\n" + current if current else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + block if current else block
    path.write_text(updated)


if __name__ == "__main__":
    main()
