"""Where consumer-host's CPU goes per message on the I/O workload: ``python -m bench.profile_host``.

Runs bench/host_app.py's host in this process under yappi (CPU clock, every thread, coroutines
included) over N pre-published messages, and prints the functions by own time and by total
time, in microseconds per message. yappi is not a dependency: ``pip install yappi`` first.

    python -m bench.profile_host --style async --concurrency 64 --n 10000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
import uuid
from typing import Any

import redis

from bench.concurrency import AMQP_URL, REDIS_URL, ROOT, Contestant, publish, purge
from bench.workload import Run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_host")
    parser.add_argument("--style", choices=("async", "sync"), default="async")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=1)
    parser.add_argument("--work", choices=("io", "cpu"), default="io")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--builtins", action="store_true", help="profile C builtins too")
    args = parser.parse_args()

    import yappi

    contestant = Contestant("profiled", "consumer-host", args.style, args.pool, args.concurrency)
    run = Run(
        queue=f"bench-prof-{uuid.uuid4().hex[:8]}",
        key=f"bench-prof:{uuid.uuid4().hex}",
        total=args.n,
        work=args.work,
        redis_url=REDIS_URL,
        concurrency=args.concurrency,
    )
    client = redis.Redis.from_url(REDIS_URL)
    os.environ.update(contestant.env(run))
    try:
        publish(contestant, run)
        from consumer_host.operating.logs import configure_logging
        from consumer_host.transports.broker import BrokerChoice

        configure_logging("json", "warning")  # as `consumer-host run --log-level warning`
        host = _load_host()

        host.use_broker(BrokerChoice(AMQP_URL, "bench"))
        yappi.set_clock_type("cpu")
        yappi.start(builtins=args.builtins)
        began = time.perf_counter()
        host.start()
        while int(client.get(run.key) or 0) < run.total:
            time.sleep(0.05)
        wall = time.perf_counter() - began
        yappi.stop()
        host.stop(10)
        _report(yappi.get_func_stats(), run.total, wall, args.top)
        print("-- CPU by thread, us per message --")
        for thread in sorted(yappi.get_thread_stats(), key=lambda t: t.ttot, reverse=True)[:8]:
            print(f"{thread.ttot / run.total * 1e6:8.1f}  {thread.name}")
    finally:
        purge(run, client)


def _load_host() -> Any:
    spec = importlib.util.spec_from_file_location("bench_host_app", ROOT / "bench" / "host_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.host


def _report(stats: Any, total: int, wall: float, top: int) -> None:
    rows = list(stats)
    cpu = sum(r.tsub for r in rows)
    print(f"{total} messages in {wall:.2f} s wall (with start-up; profiled, so slower)")
    print(f"CPU seen by yappi: {cpu:.2f} s = {cpu / total * 1e6:.0f} us per message\n")
    for title, key in (("own time", "tsub"), ("total time (incl. callees)", "ttot")):
        print(f"-- by {title}, us per message --")
        for row in sorted(rows, key=lambda r: getattr(r, key), reverse=True)[:top]:
            where = f"{os.path.basename(row.module)}:{row.lineno}"
            print(
                f"{getattr(row, key) / total * 1e6:8.1f}  {row.ncall / total:6.2f}/msg  "
                f"{row.name[:60]:60} {where}"
            )
        print()


if __name__ == "__main__":
    main()
