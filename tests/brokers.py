"""Real brokers for tests: reachability, unique queues, publishing and reading back, cleanup."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import uuid
from typing import Any
from urllib.parse import urlsplit

import amqp.exceptions
import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from consumer_host.transports.base import CONNECTION_NAME_PREFIX
from consumer_host.transports.redis_streams import entry_fields

AMQP_URL = os.environ.get("CONSUMER_HOST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CONSUMER_HOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAMS_URL = REDIS_URL.replace("redis://", "redis+streams://", 1)
REQUIRE = os.environ.get("CONSUMER_HOST_REQUIRE_BROKERS") == "1"
REDIS_HOST = urlsplit(REDIS_URL).hostname or "127.0.0.1"
REDIS_PORT = urlsplit(REDIS_URL).port or 6379


def redis_url(
    *,
    db: int | None = None,
    scheme: str = "redis",
    user: str | None = None,
    password: str | None = None,
    port: int | None = None,
) -> str:
    """REDIS_URL's server with another db, scheme, user or port (a second db, a canary user, a
    proxy in front of it), so every test honours CONSUMER_HOST_TEST_REDIS_URL."""
    parts = urlsplit(REDIS_URL)
    if user is not None or password is not None:
        credentials = f"{user or ''}:{password or ''}@"
    elif parts.password is not None:
        credentials = f"{parts.username or ''}:{parts.password}@"
    else:
        credentials = ""
    path = f"/{db}" if db is not None else (parts.path or "/0")
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{credentials}{REDIS_HOST}:{port or REDIS_PORT}{path}{query}"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(kind: str) -> None:
    """Skip (or, with CONSUMER_HOST_REQUIRE_BROKERS=1, fail) when the broker does not answer."""
    # Redis lists and Redis Streams share a server
    target = urlsplit(AMQP_URL if kind == "amqp" else REDIS_URL)
    host, port = target.hostname or "127.0.0.1", target.port or (5672 if kind == "amqp" else 6379)
    if not reachable(host, port):
        message = f"no {kind} broker on {host}:{port} (see shared/SERVICES.md)"
        if REQUIRE:
            pytest.fail(message + " and CONSUMER_HOST_REQUIRE_BROKERS=1")
        pytest.skip(message)


def unique_queue(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class BrokerTool:
    """What a test does to a broker from the outside: publish, count, read, clean up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.url = {
            "amqp": AMQP_URL,
            "redis": REDIS_URL,
            "memory": "memory://",
            "streams": STREAMS_URL,
        }[kind]
        self._conn: Connection | None = None
        self.queues: set[str] = set()

    @property
    def conn(self) -> Connection:
        """For the in-process broker, one connection; for the others, a new one each time, so
        that a test which drops every connection from the broker side leaves the tool working."""
        if self._conn is not None and self.kind != "memory":
            self._conn.release()
            self._conn = None
        if self._conn is None:
            options = {"confirm_publish": True} if self.kind == "amqp" else {}
            self._conn = Connection(self.url, transport_options=options)
        return self._conn

    def close(self) -> None:
        for queue in self.queues:
            self.delete(queue)
        if self._conn is not None:
            self._conn.release()
        self._conn = None

    def publish(
        self, queue: str, body: Any, *, headers: dict[str, Any] | None = None, **properties: Any
    ) -> None:
        self.queues.add(queue)
        if self.kind == "streams":
            message_id = properties.get("message_id")
            self._xadd(
                queue, json.dumps(body).encode(), "application/json", headers or {}, message_id
            )
            return
        channel = self.conn.default_channel
        producer = Producer(channel)
        producer.publish(
            body,
            exchange="",
            routing_key=queue,
            declare=[Queue(queue, Exchange(""), routing_key=queue, durable=True)],
            headers=headers or {},
            delivery_mode=2,
            retry=True,
            **properties,
        )

    def publish_many(self, queue: str, bodies: list[Any]) -> None:
        self.queues.add(queue)
        if self.kind == "streams":
            pipe = self._streams().pipeline(transaction=False)
            for body in bodies:
                pipe.xadd(
                    queue,
                    entry_fields(json.dumps(body).encode(), "application/json", "utf-8", {}, None),
                )
            pipe.execute()
            return
        declared = Queue(queue, Exchange(""), routing_key=queue, durable=True)
        channel = self.conn.default_channel
        producer = Producer(channel)
        declared.bind(channel).declare()
        for body in bodies:
            producer.publish(
                body, exchange="", routing_key=queue, delivery_mode=2, serializer="json"
            )

    def publish_raw(
        self,
        queue: str,
        body: bytes,
        content_type: str | None,
        *,
        content_encoding: str | None = "binary",
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Bytes as they are, with whatever content type (or none) the test wants."""
        self.queues.add(queue)
        if self.kind == "streams":
            self._xadd(queue, body, content_type, headers or {}, message_id)
            return
        if self.kind == "redis":
            envelope = {
                "body": base64.b64encode(body).decode(),
                "content-encoding": content_encoding,
                "content-type": content_type,
                "headers": headers or {},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                    "message_id": message_id,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                },
            }
            redis.Redis.from_url(self.url).lpush(queue, json.dumps(envelope))
            return
        channel = self.conn.default_channel
        Queue(queue, Exchange(""), routing_key=queue, durable=True).bind(channel).declare()
        message = channel.prepare_message(
            body,
            priority=0,
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers or {},
            properties={"delivery_mode": 2, "message_id": message_id},
        )
        channel.basic_publish(message, exchange="", routing_key=queue)

    def lpush_raw(self, queue: str, raw: bytes) -> None:
        """Redis only: a list entry that is not even a kombu envelope."""
        self.queues.add(queue)
        redis.Redis.from_url(self.url).lpush(queue, raw)

    def _streams(self) -> redis.Redis:
        return redis.Redis.from_url(REDIS_URL)

    def _xadd(self, queue, body, content_type, headers, message_id) -> None:
        fields = entry_fields(body, content_type, "utf-8", headers, message_id)
        self._streams().xadd(queue, fields)

    def _stream_backlog(self, queue: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries of a stream the consumer group has not acked: unread ones and pending ones."""
        client = self._streams()
        if not client.exists(queue):
            return []
        groups = [g for g in client.xinfo_groups(queue) if g["name"] == queue.encode()]
        if not groups:
            return client.xrange(queue)
        unread = client.xrange(queue, min=f"({groups[0]['last-delivered-id'].decode()}")
        pending = [
            client.xrange(queue, min=p["message_id"], max=p["message_id"])[0]
            for p in client.xpending_range(queue, queue, min="-", max="+", count=10_000)
        ]
        return sorted(pending + unread)

    def depth(self, queue: str) -> int:
        self.queues.add(queue)
        if self.kind == "streams":
            return len(self._stream_backlog(queue))
        if self.kind == "redis":
            return int(redis.Redis.from_url(self.url).llen(queue))
        channel = self.conn.channel()
        try:
            _, count, _ = channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            return int(count)
        except amqp.exceptions.PreconditionFailed:
            # A queue of another type (a quorum queue's quorum dead-letter queue): count it as
            # it is, on a fresh channel (the refused declare closed this one).
            channel = self.conn.channel()
            _, count, _ = channel.queue_declare(queue=queue, passive=True)
            return int(count)
        finally:
            with contextlib.suppress(Exception):
                channel.close()

    def drain(self, queue: str) -> list[tuple[bytes, dict[str, Any], str | None]]:
        """Take every message off ``queue``: (body bytes, headers, content type) each."""
        self.queues.add(queue)
        out = []
        if self.kind == "streams":
            for _, fields in self._stream_backlog(queue):
                headers = json.loads(fields.get(b"headers") or b"{}")
                content_type = (fields.get(b"content-type") or b"").decode() or None
                out.append((fields.get(b"body", b""), headers, content_type))
            self._streams().delete(queue)
            return out
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            while (raw := client.rpop(queue)) is not None:
                env = json.loads(raw)
                body = env["body"]
                body = (
                    base64.b64decode(body)
                    if env["properties"].get("body_encoding") == "base64"
                    else body.encode()
                )
                out.append((body, env.get("headers") or {}, env.get("content-type")))
            return out
        channel = self.conn.channel()
        try:
            Queue(queue, Exchange(""), routing_key=queue, durable=True).bind(channel).declare()
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                body = message.body if isinstance(message.body, bytes) else message.body.encode()
                out.append((body, message.headers or {}, message.content_type or None))
        finally:
            channel.close()
        return out

    def delete(self, queue: str) -> None:
        if self.kind in ("redis", "streams"):
            client = redis.Redis.from_url(REDIS_URL)
            keys = [queue, f"{queue}.dlq", *client.keys(f"consumer-host:{queue}:*")]
            client.delete(*keys)
            return
        names = [queue, f"{queue}.dlq"]
        if self.kind == "amqp":
            names += [q for q in rabbit_queues() if q.startswith(f"{queue}.retry.")]
        conn = self.conn
        for name in names:
            with contextlib.suppress(Exception):  # already gone
                conn.channel().queue_delete(name)


def rabbitmqctl(*args: str, check: bool = False) -> str:
    """What ``rabbitmqctl -q ARGS`` printed (the machine's own RabbitMQ)."""
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=check
    ).stdout


def rabbit_queues() -> list[str]:
    output = rabbitmqctl("list_queues", "name")
    return [line.strip() for line in output.splitlines() if line.strip()]


def rabbit_unacked(queue: str) -> int:
    for line in rabbitmqctl("list_queues", "name", "messages_unacknowledged").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return 0


def own_connection_prefix(pid: int | None = None) -> str:
    """The name prefix of every broker connection process ``pid`` (default: this one) opened
    through consumer-host's transports (see ``transports.base.connection_name``)."""
    return f"{CONNECTION_NAME_PREFIX}:{socket.gethostname()}:{pid or os.getpid()}:"


def drop_connections(kind: str, pids: tuple[int, ...] = ()) -> int:
    """Close, from the broker side, the connections this test process (or ``pids``) opened
    through consumer-host, and no one else's: the brokers are shared with other test runs
    and whatever else runs on the machine. Returns how many were closed."""
    prefixes = tuple(own_connection_prefix(pid) for pid in pids or (os.getpid(),))
    if kind == "amqp":
        listed = rabbitmqctl("list_connections", "pid", "client_properties", check=True)
        ours = [
            line.split("\t", 1)[0]
            for line in listed.splitlines()
            if any(f'{{"connection_name","{prefix}' in line for prefix in prefixes)
        ]
        closers = [
            subprocess.Popen(
                ["rabbitmqctl", "-q", "close_connection", pid, "test drop"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid in ours
        ]
        for closer in closers:
            closer.wait(timeout=60)
        return len(ours)
    client = redis.Redis.from_url(REDIS_URL)
    ours = [c["id"] for c in client.client_list() if c.get("name", "").startswith(prefixes)]
    for client_id in ours:
        with contextlib.suppress(redis.ResponseError):  # it went away by itself meanwhile
            client.client_kill_filter(_id=client_id)
    return len(ours)


def broker_tool(kind: str):
    """A broker tool for ``kind``, after making sure the broker answers; cleaned up after."""
    if kind != "memory":
        require(kind)
    tool = BrokerTool(kind)
    yield tool
    tool.close()
