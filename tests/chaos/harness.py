"""What every chaos scenario needs: brokers with a canary password, fast publishing, the host
as a real `consumer-host run` subprocess, the ledger, and the end-state checks."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from kombu import Connection, Exchange, Producer, Queue

from consumer_host.transports.redis_streams import entry_fields
from tests.brokers import REDIS_PORT, rabbit_unacked, redis_url
from tests.helpers import COMMAND, wait_until

APP = str(Path(__file__).parent / "app.py")
LEDGER_URL = redis_url(db=15)
RESULTS = Path(os.environ.get("CHAOS_RESULTS", Path(__file__).parents[2] / ".chaos-results.jsonl"))


def record(scenario: str, kind: str, **figures: Any) -> None:
    """Append this run's figures, for docs/RELIABILITY.md."""
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(json.dumps({"scenario": scenario, "broker": kind, **figures}) + "\n")


class ChaosBroker:
    """One broker, reached with a user whose password is a canary we look for in every output."""

    def __init__(self, kind: str, user: str, password: str) -> None:
        self.kind = kind
        self.user = user
        self.password = password
        self.port = 5672 if kind == "amqp" else REDIS_PORT
        self.streams = kind == "streams"
        self.queue = f"chaos-{uuid.uuid4().hex[:8]}"
        self.queue_arguments: dict[str, Any] = {}
        """AMQP: what the queue is declared with (a quorum queue), by every declare here."""

    def url(self, port: int | None = None) -> str:
        port = port or self.port
        if self.kind == "amqp":
            return f"amqp://{self.user}:{self.password}@127.0.0.1:{port}//"
        scheme = "redis+streams" if self.streams else "redis"
        return redis_url(scheme=scheme, user=self.user, password=self.password, port=port, db=0)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(redis_url(user=self.user, password=self.password, db=0))

    # -- messages ----------------------------------------------------------------------------------

    def publish(
        self,
        bodies: list[dict[str, Any]],
        raw: list[tuple[bytes, str | None]] = (),
        *,
        verify: bool = True,
    ) -> None:
        """Enqueue quickly (no confirms); with ``verify``, wait until the broker holds them all
        (only where nothing consumes yet)."""
        before = self.depth() if verify else 0
        if self.streams:
            pipe = self.client().pipeline(transaction=False)
            for body in bodies:
                pipe.xadd(
                    self.queue,
                    entry_fields(
                        json.dumps(body).encode(),
                        "application/json",
                        "utf-8",
                        {},
                        str(body.get("id")),
                    ),
                )
                if len(pipe) >= 1000:
                    pipe.execute()
            for payload, content_type in raw:
                pipe.xadd(self.queue, entry_fields(payload, content_type, None, {}, None))
            pipe.execute()
        elif self.kind == "redis":
            client = redis.Redis.from_url(self.url())
            pipe = client.pipeline(transaction=False)
            for body in bodies:
                pipe.lpush(
                    self.queue,
                    _envelope(
                        json.dumps(body).encode(), "application/json", self.queue, body.get("id")
                    ),
                )
                if len(pipe) >= 1000:
                    pipe.execute()
            for payload, content_type in raw:
                pipe.lpush(self.queue, _envelope(payload, content_type, self.queue, None))
            pipe.execute()
        else:
            with Connection(self.url()) as conn:
                channel = conn.channel()
                queue = Queue(
                    self.queue,
                    Exchange(""),
                    routing_key=self.queue,
                    durable=True,
                    queue_arguments=self.queue_arguments or None,
                )
                queue.bind(channel).declare()
                producer = Producer(channel)
                for body in bodies:
                    producer.publish(
                        body,
                        exchange="",
                        routing_key=self.queue,
                        delivery_mode=2,
                        message_id=str(body.get("id")),
                        retry=False,
                    )
                for payload, content_type in raw:
                    message = channel.prepare_message(
                        payload,
                        content_type=content_type,
                        content_encoding="binary",
                        properties={"delivery_mode": 2},
                    )
                    channel.basic_publish(message, exchange="", routing_key=self.queue)
        if not verify:
            return
        expected = before + len(bodies) + len(raw)
        wait_until(lambda: self.depth() >= expected, timeout=30, what="every message enqueued")

    def depth(self, queue: str | None = None) -> int:
        queue = queue or self.queue
        if self.streams:
            client = self.client()
            if queue != self.queue or not client.exists(queue):
                return int(client.xlen(queue))
            groups = [g for g in client.xinfo_groups(queue) if g["name"] == queue.encode()]
            if not groups:
                return int(client.xlen(queue))
            return int(groups[0]["lag"] or 0)
        if self.kind == "redis":
            return int(self.client().llen(queue))
        with Connection(self.url()) as conn:
            channel = conn.channel()
            arguments = self.queue_arguments if queue == self.queue else {}
            declared = channel.queue_declare(
                queue=queue, durable=True, auto_delete=False, arguments=arguments or None
            )
            return int(declared.message_count)

    def dlq_depth(self) -> int:
        return self.depth(f"{self.queue}.dlq")

    def unacked(self) -> int:
        """Messages held by consumers and not yet settled."""
        if self.kind == "amqp":
            return rabbit_unacked(self.queue)
        if self.streams:
            client = self.client()
            if not client.exists(self.queue):
                return 0
            return int(client.xpending(self.queue, self.queue)["pending"])
        client = redis.Redis.from_url(self.url())
        keys = client.keys(f"consumer-host:{self.queue}:processing:*")
        return sum(int(client.llen(k)) for k in keys)

    def delayed(self) -> int:
        if self.kind == "amqp":
            return 0
        return int(self.client().zcard(f"consumer-host:{self.queue}:delayed"))

    def drain_dlq(self) -> list[tuple[bytes, dict[str, Any]]]:
        name = f"{self.queue}.dlq"
        out = []
        if self.streams:
            client = self.client()
            for _, fields in client.xrange(name):
                out.append((fields[b"body"], json.loads(fields.get(b"headers") or b"{}")))
            client.delete(name)
            return out
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url())
            while (raw := client.rpop(name)) is not None:
                envelope = json.loads(raw)
                out.append((base64.b64decode(envelope["body"]), envelope["headers"]))
            return out
        with Connection(self.url()) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                body = message.body
                out.append(
                    (body.encode() if isinstance(body, str) else bytes(body), message.headers or {})
                )
        return out

    def cleanup(self) -> None:
        if self.kind in ("redis", "streams"):
            client = self.client()
            keys = [self.queue, f"{self.queue}.dlq", *client.keys(f"consumer-host:{self.queue}:*")]
            client.delete(*keys)
            return
        names = [self.queue, f"{self.queue}.dlq"]
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        names += [q for q in listed if q.startswith(f"{self.queue}.retry.")]
        with Connection(self.url()) as conn:
            for name in names:
                try:
                    conn.channel().queue_delete(name)
                except Exception:  # noqa: S112 - already gone
                    continue


def _envelope(body: bytes, content_type: str | None, queue: str, ident: Any) -> str:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8" if content_type == "application/json" else "binary",
            "content-type": content_type,
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_mode": 2,
                "message_id": None if ident is None else str(ident),
                "delivery_info": {"exchange": "", "routing_key": queue},
            },
        }
    )


class Ledger:
    """Handled ids, counted, in a Redis hash the host process cannot lose."""

    def __init__(self) -> None:
        self.key = f"ledger-{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis.from_url(LEDGER_URL)

    def counts(self, suffix: str = "") -> dict[int, int]:
        raw = self.client.hgetall(self.key + suffix)
        return {int(k): int(v) for k, v in raw.items()}

    def handled(self) -> int:
        return int(self.client.hlen(self.key))

    def delete(self) -> None:
        self.client.delete(self.key, f"{self.key}:started")


class HostProcess:
    """`consumer-host run` on the chaos app, its output in files (never a pipe that fills)."""

    runs = 0

    def __init__(
        self,
        broker: ChaosBroker,
        ledger: Ledger,
        workdir: Path,
        *,
        url: str | None = None,
        app: str = APP,
        **env: Any,
    ) -> None:
        HostProcess.runs += 1
        self.out = workdir / f"run-{HostProcess.runs}.out"
        self.err = workdir / f"run-{HostProcess.runs}.err"
        variables = {
            **os.environ,
            "CONSUMER_HOST_BROKER_URL": url or broker.url(),
            "CONSUMER_HOST_LOG_FORMAT": "json",
            "CHAOS_QUEUE": broker.queue,
            "CHAOS_LEDGER_URL": LEDGER_URL,
            "CHAOS_LEDGER_KEY": ledger.key,
            **{k: str(v) for k, v in env.items()},
        }
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [COMMAND, "run", app], stdout=out, stderr=err, env=variables, cwd=workdir
            )
        self.started = time.monotonic()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a host a test left stopped cannot drain
            self.terminate()

    def hang_up(self, timeout: float = 30) -> int:
        """SIGHUP (a closed terminal, a supervisor's reload): it must drain like SIGTERM."""
        self.process.send_signal(signal.SIGHUP)
        return self.process.wait(timeout)

    def freeze(self) -> None:
        """SIGSTOP: a stall (GC pause, frozen VM) the host does not see coming."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def events(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.out.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()
