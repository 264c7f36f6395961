"""The per-message path without I/O (issue 24, point 3): ``python -m bench.path``.

Each row consumes N pre-published small JSON messages with a no-op handler, in a fresh process,
and reports msg/s and CPU per message from the first handled message to the N-th (start-up
excluded). The raw loops are the ceilings the host is held against:

* ``raw kombu``: kombu ``Consumer``, decode, one ``message.ack()`` per message;
* ``raw py-amqp, multiple acks``: py-amqp alone, decode, one ``basic.ack(multiple)`` per
  ``prefetch / 2`` messages (what the host's coalesced acks do at best);
* ``raw streams``: XREADGROUP ``prefetch`` entries, decode, one XACK per batch;
* ``raw kombu + 64 threads``: a connection thread hands messages to 64 threads and acks what
  they hand back, the minimal threaded loop beside the host's ``concurrency=64`` threads.

    python -m bench.path --n 20000                 # every row, one round each
    python -m bench.path --rows host-amqp --profile  # yappi, every thread

Nothing here is asserted: speed figures go in bench/PATH.md, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue as queues
import subprocess
import sys
import threading
import uuid
from typing import Any

from bench.contestants import Clockwork, list_loop, stream_loop

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
STREAMS_URL = "redis+streams://127.0.0.1:6379/0"
PREFETCH = 100

#: row name -> (broker, child kind)
ROWS = {
    "raw-kombu": ("amqp", "raw kombu, per-message acks"),
    "raw-amqp": ("amqp", "raw py-amqp, multiple acks"),
    "host-amqp": ("amqp", "consumer-host pool 1, coalesced acks"),
    "raw-streams": ("streams", "raw redis-py XREADGROUP/XACK"),
    "raw-streams-pure": ("streams", "raw redis-py XREADGROUP/XACK, pure-Python parser"),
    "host-streams": ("streams", "consumer-host pool 1"),
    "raw-lists": ("redis", "raw redis-py BLMOVE + LMOVEs / LREMs"),
    "host-lists": ("redis", "consumer-host pool 1"),
    "raw-threads": ("amqp", "raw kombu + 64 threads"),
    "host-threads": ("amqp", "consumer-host threads, concurrency=64"),
    "host-async": ("amqp", "consumer-host async, concurrency=64"),
}


def per_message(clock: Clockwork) -> dict[str, Any]:
    """msg/s and CPU microseconds per message, from the first handled message to the N-th."""
    seconds, cpu = clock.span()
    return {"rate": (clock.total - 1) / seconds, "cpu_us_per_msg": cpu / (clock.total - 1) * 1e6}


# -- the contestants, each in its own process ---------------------------------------------------


def raw_kombu(queue: str, clock: Clockwork) -> None:
    from kombu import Connection, Consumer, Queue

    def on_message(body: Any, message: Any) -> None:
        message.ack()
        clock.tick()

    with Connection(AMQP_URL) as conn:
        consumer = Consumer(
            conn.channel(),
            [Queue(queue, routing_key=queue, durable=True)],
            callbacks=[on_message],
            accept=["json"],
            prefetch_count=PREFETCH,
        )
        with consumer:
            _drain(conn, clock)


def raw_amqp(queue: str, clock: Clockwork) -> None:
    import amqp

    every = PREFETCH // 2
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")  # noqa: S106
    conn.connect()
    channel = conn.channel()
    channel.basic_qos(0, PREFETCH, False)
    seen = [0]

    def on_message(message: Any) -> None:
        json.loads(message.body)
        seen[0] += 1
        if seen[0] % every == 0 or seen[0] == clock.total:
            channel.basic_ack(message.delivery_tag, multiple=True)
        clock.tick()

    channel.basic_consume(queue, callback=on_message)
    _drain(conn, clock)
    conn.close()


def raw_streams(queue: str, clock: Clockwork) -> None:
    stream_loop(REDIS_URL, queue, clock, PREFETCH)


def raw_threads(queue: str, clock: Clockwork) -> None:
    from kombu import Connection, Consumer, Queue

    work: queues.SimpleQueue[Any] = queues.SimpleQueue()
    finished: queues.SimpleQueue[Any] = queues.SimpleQueue()

    def worker() -> None:
        while (message := work.get()) is not None:
            json.loads(message.body)
            clock.tick()
            finished.put(message)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(64)]
    for thread in threads:
        thread.start()
    with Connection(AMQP_URL) as conn:
        consumer = Consumer(
            conn.channel(),
            [Queue(queue, routing_key=queue, durable=True)],
            on_message=work.put,  # decoded in the worker threads, as the host does
            prefetch_count=PREFETCH,
        )
        with consumer:
            while not clock.done.is_set():
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.005)
                with contextlib.suppress(queues.Empty):
                    while True:
                        finished.get_nowait().ack()
    for _ in threads:
        work.put(None)


def host(url: str, queue: str, clock: Clockwork, **options: Any) -> None:
    from consumer_host import Host
    from consumer_host.operating.logs import configure_logging
    from consumer_host.transports.broker import BrokerChoice

    configure_logging("json", "warning")  # as `consumer-host run --log-level warning`
    app = Host("bench")
    app.use_broker(BrokerChoice(url, "bench"))
    if options.pop("style", "sync") == "async":

        async def handle(message: Any) -> None:
            clock.tick()

        app.consumer("bench", queue=queue, **options)(handle)
    else:
        app.consumer("bench", queue=queue, **options)(lambda message: clock.tick())
    app.start()
    clock.done.wait(600)
    app.stop(10)


def _drain(conn: Any, clock: Clockwork) -> None:
    while not clock.done.is_set():
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=1)


def child(row: str, queue: str, total: int, profile: bool) -> None:
    clock = Clockwork(total)
    runs = {
        "raw-kombu": lambda: raw_kombu(queue, clock),
        "raw-amqp": lambda: raw_amqp(queue, clock),
        "raw-streams": lambda: raw_streams(queue, clock),
        "raw-streams-pure": lambda: stream_loop(REDIS_URL, queue, clock, PREFETCH, pure=True),
        "raw-threads": lambda: raw_threads(queue, clock),
        "raw-lists": lambda: list_loop(REDIS_URL, queue, clock, PREFETCH),
        "host-lists": lambda: host(REDIS_URL, queue, clock, prefetch=PREFETCH),
        "host-amqp": lambda: host(AMQP_URL, queue, clock, prefetch=PREFETCH),
        "host-streams": lambda: host(STREAMS_URL, queue, clock, prefetch=PREFETCH),
        "host-threads": lambda: host(AMQP_URL, queue, clock, prefetch=PREFETCH, concurrency=64),
        "host-async": lambda: host(
            AMQP_URL, queue, clock, prefetch=PREFETCH, concurrency=64, style="async"
        ),
    }
    profiler = threading.Thread(target=_profile, args=(clock,), daemon=True)
    if profile:
        profiler.start()
    runs[row]()
    if profile:
        profiler.join(60)
    print(json.dumps(per_message(clock)), flush=True)


def _profile(clock: Clockwork, top: int = 45) -> None:
    """yappi (CPU clock, every thread) from the first handled message to the N-th, printed to
    stderr in microseconds per message. ``pip install yappi`` first; the figures are slower."""
    import yappi

    clock.started.wait()
    yappi.set_clock_type("cpu")
    yappi.start()
    clock.done.wait()
    yappi.stop()
    rows = list(yappi.get_func_stats())
    per = 1e6 / clock.total
    out = [f"yappi: {sum(r.tsub for r in rows) * per:.0f} us/msg seen"]
    for title, key in (("own time", "tsub"), ("total time", "ttot")):
        out.append(f"-- by {title}, us per message --")
        for r in sorted(rows, key=lambda r: getattr(r, key), reverse=True)[:top]:
            where = f"{os.path.basename(r.module)}:{r.lineno}"
            calls = r.ncall / clock.total
            out.append(f"{getattr(r, key) * per:8.1f} {calls:6.2f}/msg {r.name[:50]:50} {where}")
    sys.stderr.write("\n".join(out) + "\n")


# -- the parent: publish and purge as bench/__main__.py does, run -------------------------------


def run_row(row: str, n: int, profile: bool) -> dict[str, Any]:
    from bench.__main__ import publish, purge  # the throughput benchmark's messages

    broker = ROWS[row][0]
    queue = f"bench-path-{uuid.uuid4().hex[:8]}"
    try:
        publish(broker, queue, n, celery=False)
        command = [sys.executable, "-m", "bench.path", "--child", row, queue, str(n)]
        if profile:
            command.append("--profile")
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if profile:
            sys.stderr.write(done.stderr)
        lines = done.stdout.strip().splitlines()
        if done.returncode or not lines:
            raise SystemExit(f"{row} failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(lines[-1]))
    finally:
        purge(broker, queue)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.path")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--profile", action="store_true", help="yappi on each row's process")
    parser.add_argument("--child", nargs=3, metavar=("ROW", "QUEUE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row, queue, total = args.child
        child(row, queue, int(total), args.profile)
        return
    print(f"| row | msg/s | CPU us/msg |  (N={args.n}, prefetch {PREFETCH}, one run each)")
    for row in args.rows.split(","):
        report = run_row(row, args.n, args.profile)
        print(f"| {ROWS[row][1]} | {report['rate']:,.0f} | {report['cpu_us_per_msg']:.1f} |")


if __name__ == "__main__":
    main()
