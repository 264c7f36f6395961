"""``consumer-host dlq list`` over 10,000 dead letters, on each broker (issue 23: within 2 s).

    python -m bench.dlq_list [--count N]

Wall time of the whole command (interpreter start included), best and worst of 3 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from kombu import Connection, Producer

from consumer_host.transports.redis_streams import entry_fields

AMQP_URL = os.environ.get("CONSUMER_HOST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CONSUMER_HOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
APP = Path(__file__).with_name("dlq_app.py")
HEADERS = {"x-error-type": "ValueError", "x-error": "ValueError: no", "x-attempts": 4}


def fill(kind: str, dead_letter: str, count: int) -> None:
    if kind == "amqp":
        with Connection(AMQP_URL) as conn:
            channel = conn.channel()
            channel.queue_declare(queue=dead_letter, durable=True, auto_delete=False)
            producer = Producer(channel)
            for n in range(count):
                producer.publish(
                    {"n": n}, routing_key=dead_letter, serializer="json", headers=HEADERS
                )
        return
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        body = json.dumps({"n": n}).encode()
        if kind == "streams":
            pipe.xadd(dead_letter, entry_fields(body, "application/json", "utf-8", HEADERS, None))
        else:
            envelope = {
                "body": __import__("base64").b64encode(body).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": HEADERS,
                "properties": {"body_encoding": "base64", "delivery_info": {}},
            }
            pipe.lpush(dead_letter, json.dumps(envelope))
    pipe.execute()


def clean(kind: str, dead_letter: str) -> None:
    if kind == "amqp":
        with Connection(AMQP_URL) as conn:
            conn.channel().queue_delete(dead_letter)
    else:
        redis.Redis.from_url(REDIS_URL).delete(dead_letter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    urls = {
        "amqp": AMQP_URL,
        "redis": REDIS_URL,
        "streams": REDIS_URL.replace("redis://", "redis+streams://", 1),
    }
    for kind, url in urls.items():
        queue = f"dlqbench-{uuid.uuid4().hex[:8]}"
        fill(kind, f"{queue}.dlq", args.count)
        times = []
        try:
            for _ in range(3):
                began = time.monotonic()
                result = subprocess.run(
                    [sys.executable, "-m", "consumer_host", "dlq", "list", str(APP), "--json"],
                    env={**os.environ, "BENCH_QUEUE": queue, "CONSUMER_HOST_BROKER_URL": url},
                    capture_output=True,
                    text=True,
                    check=False,
                )
                times.append(time.monotonic() - began)
                if result.returncode != 0:
                    raise SystemExit(f"{kind}: {result.stderr.strip()}")
                if str(args.count) not in result.stdout:
                    raise SystemExit(f"{kind}: not every dead letter listed: {result.stdout}")
        finally:
            clean(kind, f"{queue}.dlq")
        print(
            json.dumps(
                {
                    "broker": kind,
                    "count": args.count,
                    "best s": round(min(times), 2),
                    "worst s": round(max(times), 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
