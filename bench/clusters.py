"""``python -m bench.clusters``: consumer-host on a Redis Cluster next to a single Redis node,
lists and Streams (issue 22). Start the cluster first: ``scripts/redis-clusters.sh start``.

Each run pre-publishes N small JSON messages with the project's producers' format (lists:
kombu's envelope by LPUSH; Streams: XADD), starts ``consumer-host run bench/clusters_app.py``
and times the first to the last handled message; the median of the repeats (min-max) goes to
bench/RESULTS.md's ``clusters`` section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.__main__ import write_section
from consumer_host.transports.redis_clients import build_client
from consumer_host.transports.redis_envelope import write_envelope
from consumer_host.transports.redis_stream_entries import entry_fields

HERE = Path(__file__).parent
COMMAND = str(Path(sys.executable).parent / "consumer-host")
URLS = {
    "single node, lists": "redis://127.0.0.1:6379/0",
    "single node, Streams": "redis+streams://127.0.0.1:6379/0",
    "Redis Cluster (3 primaries), lists": "redis://127.0.0.1:7001/0?cluster=true",
    "Redis Cluster (3 primaries), Streams": "redis+streams://127.0.0.1:7001/0?cluster=true",
}
BODY = json.dumps({"id": 0, "order": "A-1000", "amount": 12.5, "items": [1, 2, 3]}).encode()


def publish(url: str, queue: str, n: int) -> None:
    client = build_client(url, connect_timeout=5, socket_timeout=30)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        if "+streams" in url:
            pipe.xadd(queue, entry_fields(BODY, "application/json", "utf-8", {}, str(i)))
        else:
            envelope = write_envelope(
                BODY,
                content_type="application/json",
                content_encoding="utf-8",
                headers={},
                properties={"message_id": str(i)},
                routing_key=queue,
            )
            pipe.lpush(queue, envelope)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.close()


def one_run(url: str, n: int, pool: int) -> float:
    queue = f"bench-cl-{uuid.uuid4().hex[:8]}"
    publish(url, queue, n)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        env = {
            **os.environ,
            "BENCH_N": str(n),
            "BENCH_OUT": str(out),
            "BENCH_BROKER": url,
            "BENCH_QUEUE": queue,
            "BENCH_POOL": str(pool),
            "CONSUMER_HOST_HEALTH_PORT": "0",
            "CONSUMER_HOST_LOG_LEVEL": "warning",
        }
        subprocess.run(
            [COMMAND, "run", str(HERE / "clusters_app.py")],
            env=env,
            timeout=600,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        result = json.loads(out.read_text())
    client = build_client(url, connect_timeout=5, socket_timeout=30)
    client.delete(queue)
    client.close()
    return float(result["n"]) / float(result["elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    rows = []
    for label, url in URLS.items():
        for pool in (1, 4):
            rates = [one_run(url, args.n, pool) for _ in range(args.repeats)]
            line = (
                f"| {label} | {pool} | {statistics.median(rates):,.0f} "
                f"({min(rates):,.0f}-{max(rates):,.0f}) |"
            )
            print(line, flush=True)
            rows.append(line)
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    section = "\n".join(
        [
            "## Redis Cluster next to a single Redis node",
            "",
            f"`python -m bench.clusters --n {args.n} --repeats {args.repeats}` ({when}, the 2-core "
            "machine shared with other work): consumer-host handling N pre-published small JSON "
            "messages, first to last handled, median of the repeats (min-max). The cluster is "
            "`scripts/redis-clusters.sh` (3 primaries, 3 replicas, loopback); one queue lives in "
            "one slot, so one queue is served by one primary: a cluster adds capacity across "
            "queues, not within one.",
            "",
            "| broker | pool | msg/s (min-max) |",
            "| --- | --- | --- |",
            *rows,
        ]
    )
    write_section(args.out, "clusters", section)


if __name__ == "__main__":
    main()
