"""Connections dropped from the broker side, and credentials kept out of every output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import uuid

import pytest
import redis
from kombu import Connection

from consumer_host import BrokerCircuitOptions, Host
from consumer_host.operating.logs import configure_logging
from consumer_host.supervision.events import BreakerChanged, ConsumerConnected
from consumer_host.transports.broker import BrokerChoice

from .brokers import (
    AMQP_URL,
    REDIS_URL,
    BrokerTool,
    drop_connections,
    own_connection_prefix,
    redis_url,
    unique_queue,
)
from .helpers import EventLog, wait_until

# Each test drops this process's own broker connections (named by the transports) and no
# one else's, so they run beside every other test and anything else using the brokers.
pytestmark = [pytest.mark.timeout(300)]


def test_dropped_connections_are_recovered_through_the_breaker_and_nothing_is_lost(real_broker):
    """Three rounds: drop every connection mid-stream, then again while the consumers wait.

    (redis-py quietly reconnects a pooled connection killed between two commands, so on Redis
    only the drop of a waiting consumer is sure to surface as a disconnect.)
    """
    queue = unique_queue()
    per_round, rounds = 300, 3
    seen: list[int] = []
    lock = threading.Lock()
    events = EventLog()
    host = Host("shop", broker_circuit=BrokerCircuitOptions(threshold=2, window=60, cooldown=0.3))
    host.use_broker(BrokerChoice(real_broker.url, "test"))
    host.subscribe(events)

    @host.consumer("orders", queue=queue, pool=2, prefetch=20)
    def handle(message):
        threading.Event().wait(0.01)
        with lock:
            seen.append(message.body["n"])

    def reconnects():
        return sum(e.reconnect for e in events.of(ConsumerConnected))

    def recovered():
        connected = all(r["connected"] for r in host.status())
        return connected and set(host.brokers().values()) == {"closed"}

    host.start()
    try:
        for round_ in range(rounds):
            numbers = range(round_ * per_round, (round_ + 1) * per_round)
            real_broker.publish_many(queue, [{"n": n} for n in numbers])
            wait_until(lambda r=round_: len(seen) >= r * per_round + 40, what="progress")
            drop_connections(real_broker.kind)
            wait_until(lambda n=numbers: set(n) <= set(seen), timeout=60, what="the round")
            before = reconnects()
            drop_connections(real_broker.kind)
            wait_until(lambda b=before: reconnects() >= b + 2, timeout=30, what="reconnects")
        # A reconnect counted above may be a late one from the mid-round drop: wait until the
        # last drop is over too, so the state asserted below is the recovered one.
        wait_until(recovered, timeout=30, what="every consumer connected, the breaker closed")
        wait_until(lambda: real_broker.depth(queue) == 0, what="an empty queue")
    finally:
        assert host.stop(10) == ()
    total = per_round * rounds
    assert set(seen) == set(range(total)), "nothing lost"
    assert len(seen) - total <= 2 * rounds * 2 * 20, "duplicates bounded by drops x pool x prefetch"
    assert real_broker.depth(f"{queue}.dlq") == 0
    transitions = [(e.old, e.new) for e in events.of(BreakerChanged)]
    assert ("closed", "open") in transitions
    assert ("half_open", "closed") in transitions
    assert set(host.brokers().values()) == {"closed"}
    assert all(r["restarts"] == 0 for r in host.status()), "connection loss is not a loop failure"


@pytest.fixture
def canary_url(real_broker):
    """A broker user whose password is a canary we then look for everywhere."""
    password = f"CANARY{uuid.uuid4().hex[:12]}"
    user = f"canary{uuid.uuid4().hex[:6]}"
    if real_broker.kind == "amqp":
        for args in (
            ["add_user", user, password],
            ["set_permissions", "-p", "/", user, ".*", ".*", ".*"],
        ):
            subprocess.run(
                ["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60
            )
        yield f"amqp://{user}:{password}@127.0.0.1:5672//", password
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False
        )
    else:
        client = redis.Redis.from_url(REDIS_URL)
        client.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{password}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        scheme = "redis+streams" if real_broker.kind == "streams" else "redis"
        yield redis_url(scheme=scheme, user=user, password=password), password
        client.acl_deluser(user)


def test_no_password_in_logs_status_or_errors(real_broker, canary_url):
    url, password = canary_url
    queue = unique_queue()
    real_broker.publish_many(queue, [{"n": n} for n in range(20)])
    real_broker.publish_raw(queue, b"not json", "application/json")
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    done = threading.Event()
    host = Host("shop", broker_circuit=BrokerCircuitOptions(threshold=1, window=60, cooldown=0.2))
    host.use_broker(BrokerChoice(url, "test"))

    @host.consumer("orders", queue=queue, max_retries=1, retry_backoff_min=0.01)
    def handle(message):
        if message.body == {"n": 3}:
            raise RuntimeError(f"failed talking to {url}")  # a careless handler
        if message.body == {"n": 19}:
            done.set()

    wrong = url.replace(password, password + "x")
    bad_host = Host("bad")
    bad_host.use_broker(BrokerChoice(wrong, "test"))
    bad_host.consumer("wrong", queue=queue, max_restarts=1)(lambda m: None)
    host.start()
    bad_host.start()
    try:
        assert done.wait(30)
        wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 2, what="both dead letters")
        drop_connections(real_broker.kind)
        wait_until(lambda: host.status()[0]["connected"], timeout=30)
        wait_until(lambda: bad_host.status()[0]["state"] == "tripped", timeout=30)
        status = json.dumps([host.status(), host.brokers(), bad_host.status(), bad_host.brokers()])
    finally:
        host.stop(10)
        bad_host.stop(10)
    text = out.getvalue()
    for line in text.splitlines():
        json.loads(line)
    assert "worker_tripped" in text, "the refused login was logged"
    assert "message_retrying" in text
    assert password not in text
    assert password not in status
    assert ":***@" in text
    real_broker.queues.add(queue)
    dead = real_broker.drain(f"{queue}.dlq")
    assert all(password not in json.dumps(h, default=str) for _, h, _ in dead)
    assert len(dead) == 2


def test_a_queue_tool_is_left_usable(real_broker):
    """The drops above must not leave the shared broker in a state the next tests trip on."""
    tool = BrokerTool(real_broker.kind)
    queue = unique_queue()
    tool.publish(queue, {"ok": True})
    assert tool.depth(queue) == 1
    tool.close()


def test_a_drop_closes_only_this_process_s_named_connections(real_broker):
    """Connections opened by anyone else (unnamed, or named for another process) survive the
    drop the tests above use; the host's own connections do not."""
    host = Host("shop", broker_circuit=BrokerCircuitOptions(threshold=5, window=60, cooldown=0.2))
    host.use_broker(BrokerChoice(real_broker.url, "test"))
    events = EventLog()
    host.subscribe(events)
    host.consumer("orders", queue=unique_queue())(lambda m: None)
    stranger = f"consumer-host:elsewhere:{os.getpid() + 1}:orders-0"
    assert not stranger.startswith(own_connection_prefix())
    if real_broker.kind == "amqp":
        unnamed = Connection(AMQP_URL)
        named = Connection(
            AMQP_URL, transport_options={"client_properties": {"connection_name": stranger}}
        )
        foreign = [unnamed, named]
        for conn in foreign:
            conn.connect()

        def alive(conn):
            conn.channel().close()  # a round trip: raises if the broker closed the connection
            return True
    else:
        foreign = [redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)]
        foreign[1].client_setname(stranger)

        def alive(conn):
            return conn.ping()

    host.start()
    try:
        wait_until(lambda: host.status()[0]["connected"], what="connected")
        assert drop_connections(real_broker.kind) >= 1, "the host's own connections were closed"
        if real_broker.kind == "amqp":
            # (redis-py may reconnect a killed connection between two commands without a word)
            wait_until(
                lambda: sum(e.reconnect for e in events.of(ConsumerConnected)) >= 1,
                timeout=30,
                what="the host's reconnect",
            )
        assert all(alive(conn) for conn in foreign)
    finally:
        host.stop(10)
        for conn in foreign:
            conn.close()
