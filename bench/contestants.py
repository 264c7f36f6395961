"""One contestant per process: consume N messages, report time, CPU and memory as JSON.

Timing runs from the first handled message to the N-th, so connection set-up and worker boot
(Celery's is long) are not counted against anyone. CPU is this process's user + system time over
the same span.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time
from typing import Any


class Clockwork:
    """Counts handled messages and notes when (wall and CPU time) the first and the last came."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.started = threading.Event()
        """Set at the first message: a profiler (bench/path.py) starts then."""
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None

    def tick(self) -> None:
        with self.lock:
            self.count += 1
            if self.first is None:
                self.first = (time.perf_counter(), _cpu())
                self.started.set()
            if self.count == self.total:
                self.last = (time.perf_counter(), _cpu())
                self.done.set()

    def span(self) -> tuple[float, float]:
        """Wall and CPU seconds from the first message to the last."""
        assert self.first is not None
        assert self.last is not None
        return self.last[0] - self.first[0], self.last[1] - self.first[1]

    def report(self) -> dict[str, Any]:
        seconds, cpu = self.span()
        return {
            "messages": self.total,
            "seconds": seconds,
            "rate": (self.total - 1) / seconds if seconds else float("inf"),
            "cpu_per_1000": cpu / self.total * 1000,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def raw_kombu(url: str, queue: str, total: int, prefetch: int) -> dict[str, Any]:
    """The hand-written loop a careful kombu user would write: decode, ack, per message."""
    from kombu import Connection, Consumer, Exchange, Queue

    clock = Clockwork(total)

    def on_message(body: Any, message: Any) -> None:
        message.ack()
        clock.tick()

    with Connection(url) as conn:
        channel = conn.channel()
        consumer = Consumer(
            channel,
            [Queue(queue, Exchange(""), routing_key=queue, durable=True)],
            callbacks=[on_message],
            accept=["json"],
            prefetch_count=prefetch,
        )
        with consumer:
            while not clock.done.is_set():
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    continue
    return clock.report()


def raw_streams(
    url: str, queue: str, total: int, prefetch: int, *, pure: bool = False
) -> dict[str, Any]:
    """A plain redis-py loop on a stream: XREADGROUP a batch, XACK the batch."""
    clock = Clockwork(total)
    stream_loop(url.replace("+streams", ""), queue, clock, prefetch, pure=pure)
    return clock.report()


def redis_client(url: str, *, pure: bool = False) -> Any:
    """A redis-py client; ``pure``: with redis-py's pure-Python reply parser, what a plain
    ``pip install redis`` parses with (consumer-host installs hiredis, and so do these loops
    when it is installed: both sides of a ratio parse alike)."""
    import redis

    if not pure:
        return redis.Redis.from_url(url)
    from redis._parsers import _RESP3Parser

    return redis.Redis.from_url(url, parser_class=_RESP3Parser)


def stream_loop(
    redis_url: str, queue: str, clock: Clockwork, prefetch: int, *, pure: bool = False
) -> None:
    """XREADGROUP up to ``prefetch`` entries, decode each body, one XACK per batch, until
    ``clock`` is done (bench/path.py's raw Streams row runs it too)."""
    import redis

    client = redis_client(redis_url, pure=pure)
    group, consumer = queue, "raw"
    with contextlib.suppress(redis.ResponseError):  # the group exists already
        client.xgroup_create(queue, group, id="0", mkstream=True)
    while not clock.done.is_set():
        reply = client.xreadgroup(group, consumer, {queue: ">"}, count=prefetch, block=1000)
        for _stream, entries in reply or ():
            ids = []
            for entry_id, fields in entries:
                json.loads(fields[b"body"])
                ids.append(entry_id)
                clock.tick()
            client.xack(queue, group, *ids)


def raw_pyamqp(url: str, queue: str, total: int, prefetch: int) -> dict[str, Any]:
    """The leanest AMQP loop: py-amqp basic_consume, decode, one ack(multiple) per half prefetch."""
    import amqp

    clock = Clockwork(total)
    every = max(1, prefetch // 2)
    unacked = [0]
    parsed = amqp_arguments(url)
    with amqp.Connection(**parsed) as conn:
        channel = conn.channel()
        channel.basic_qos(0, prefetch, False)

        def on_message(message: Any) -> None:
            json.loads(message.body)
            clock.tick()
            unacked[0] += 1
            if unacked[0] >= every or clock.done.is_set():
                channel.basic_ack(message.delivery_tag, multiple=True)
                unacked[0] = 0

        channel.basic_consume(queue, callback=on_message)
        while not clock.done.is_set():
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    return clock.report()


def amqp_arguments(url: str) -> dict[str, Any]:
    """py-amqp's connection arguments for an ``amqp://user:password@host:port/vhost`` URL."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) or "/"
    return {
        "host": f"{parts.hostname}:{parts.port or 5672}",
        "userid": unquote(parts.username or "guest"),
        "password": unquote(parts.password or "guest"),
        "virtual_host": vhost,
    }


def raw_lists(
    url: str, queue: str, total: int, prefetch: int, *, pure: bool = False
) -> dict[str, Any]:
    """A plain redis-py reliable-queue loop on a list, as lean as it gets by hand.

    ``BLMOVE`` one entry to a processing list, ``LMOVE`` up to ``prefetch - 1`` more in one
    pipeline, decode each, then ``LREM`` the batch from the processing list in one pipeline.
    The entries are kombu's Redis envelopes (what consumer-host reads too): JSON, body base64.
    """
    clock = Clockwork(total)
    list_loop(url, queue, clock, prefetch, pure=pure)
    return clock.report()


def list_loop(url: str, queue: str, clock: Clockwork, prefetch: int, *, pure: bool = False) -> None:
    """The lists loop of :func:`raw_lists` until ``clock`` is done (bench/path.py runs it too)."""
    import base64

    client = redis_client(url, pure=pure)
    processing = f"{queue}.raw-processing"
    try:
        while not clock.done.is_set():
            first = client.blmove(queue, processing, 1, "RIGHT", "LEFT")
            if first is None:
                continue
            pipe = client.pipeline(transaction=False)
            for _ in range(prefetch - 1):
                pipe.lmove(queue, processing, "RIGHT", "LEFT")
            batch = [first, *(raw for raw in pipe.execute() if raw is not None)]
            for raw in batch:
                envelope = json.loads(raw)
                body = envelope["body"]
                if envelope.get("properties", {}).get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                json.loads(body)
                clock.tick()
            for raw in batch:
                pipe.lrem(processing, -1, raw)
            pipe.execute()
    finally:
        client.delete(processing)


def _run_host(url: str, total: int, register: Any) -> dict[str, Any]:
    """Run a host whose one registration (``register(host, clock)``) ticks the clock."""
    from consumer_host import Host
    from consumer_host.operating.logs import configure_logging
    from consumer_host.transports.broker import BrokerChoice

    # As `consumer-host run --log-level warning` would: unconfigured, structlog prints every
    # event, the per-message debug lines included, and the figures measure the printing.
    configure_logging("json", "warning")
    clock = Clockwork(total)
    host = Host("bench")
    host.use_broker(BrokerChoice(url, "bench"))
    register(host, clock)
    host.start()
    clock.done.wait(600)
    report = clock.report()
    host.stop(10)
    return report


def consumer_host(
    url: str, queue: str, total: int, prefetch: int, pool: int, coalesce: bool = True
) -> dict[str, Any]:
    def register(host: Any, clock: Clockwork) -> None:
        host.consumer("bench", queue=queue, pool=pool, prefetch=prefetch, ack_coalescing=coalesce)(
            lambda message: clock.tick()
        )

    return _run_host(url, total, register)


def consumer_host_celery(url: str, queue: str, total: int, prefetch: int) -> dict[str, Any]:
    """consumer-host standing in for the Celery worker: same producers, same task messages."""

    def register(host: Any, clock: Clockwork) -> None:
        host.celery_task("bench.noop", queue=queue, prefetch=prefetch)(lambda n: clock.tick())

    return _run_host(url, total, register)


def celery_worker(url: str, queue: str, total: int, prefetch: int) -> dict[str, Any]:
    """A Celery worker, solo pool, late acks: the peer people run today."""
    from bench.celery_app import make_app

    clock = Clockwork(total)
    app = make_app(url, prefetch)

    @app.task(name="bench.noop", acks_late=True, ignore_result=True)
    def noop(n: int) -> None:
        clock.tick()
        if clock.done.is_set():
            # Celery redirects sys.stdout into its logger: write to the real one.
            os.write(1, (json.dumps(clock.report()) + "\n").encode())
            os._exit(0)

    app.worker_main(
        [
            "worker",
            "-P",
            "solo",
            "-c",
            "1",
            "-Q",
            queue,
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "error",
        ]
    )
    raise SystemExit("the Celery worker ended before handling every task")


def main() -> None:
    kind, url, queue, total, prefetch, *rest = sys.argv[1:]
    n, p = int(total), int(prefetch)
    if kind in ("raw-streams", "raw-streams-pure"):
        report = raw_streams(url, queue, n, p, pure=kind.endswith("-pure"))
    elif kind == "raw-kombu":
        report = raw_kombu(url, queue, n, p)
    elif kind == "raw-pyamqp":
        report = raw_pyamqp(url, queue, n, p)
    elif kind in ("raw-lists", "raw-lists-pure"):
        report = raw_lists(url, queue, n, p, pure=kind.endswith("-pure"))
    elif kind == "consumer-host":
        report = consumer_host(url, queue, n, p, int(rest[0]), coalesce=rest[1] == "coalesce")
    elif kind == "celery":
        celery_worker(url, queue, n, p)
        return
    elif kind == "consumer-host-celery":
        report = consumer_host_celery(url, queue, n, p)
    elif kind == "idle":
        report = idle_host(url, queue, n, float(rest[0]))
    else:
        raise SystemExit(f"unknown contestant {kind}")
    print(json.dumps(report), flush=True)


def idle_host(url: str, queue: str, consumers: int, seconds: float) -> dict[str, Any]:
    """A host with idle consumers: what it costs to wait."""
    from consumer_host import Host
    from consumer_host.transports.broker import BrokerChoice

    host = Host("idle")
    host.use_broker(BrokerChoice(url, "bench"))
    for index in range(consumers):
        host.consumer(f"idle-{index}", queue=f"{queue}-{index}")(lambda message: None)
    host.start()
    threading.Event().wait(3)  # connected and settled
    began, cpu = time.perf_counter(), _cpu()
    threading.Event().wait(seconds)
    report = {
        "consumers": consumers,
        "cpu_percent": (_cpu() - cpu) / (time.perf_counter() - began) * 100,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    host.stop(10)
    return report


if __name__ == "__main__":
    main()
