"""Hostile input, end to end: the real `consumer-host run`, the real brokers, handlers and
producers that do everything they should not, and every message counted (issue 13).

Each scenario proves, with the ledger outside the host, that nothing is lost: a message is
handled, dead-lettered, or still in its queue at the end. Figures go to ``.chaos-results.jsonl``
for docs/RELIABILITY.md's "Hostile input" table.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis
from kombu import Connection

from tests.brokers import require
from tests.helpers import COMMAND, wait_until

from .harness import LEDGER_URL, ChaosBroker, HostProcess, record

HOSTILE_APP = str(Path(__file__).parent / "hostile_app.py")
RAISES = ["KeyboardInterrupt", "SystemExit", "GeneratorExit", "Hostile", "Unprintable"]

pytestmark = pytest.mark.timeout(180)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def redis_broker(canary_users):
    """Redis lists only, for the scenarios about Redis lists' own keys."""
    require("redis")
    user, password = canary_users
    broker = ChaosBroker("redis", user, password)
    yield broker
    broker.cleanup()


@pytest.fixture
def amqp_broker(canary_users):
    require("amqp")
    user, password = canary_users
    broker = ChaosBroker("amqp", user, password)
    yield broker
    broker.cleanup()


@pytest.fixture
def hostile(request, ledger, tmp_path):
    """Start hostile-app hosts with ``hostile(**env)``; all are stopped, and their output is
    searched for the canary password, at the end of the test."""
    started: list[HostProcess] = []
    names = ("any_broker", "chaos_broker", "redis_broker", "amqp_broker")
    broker = request.getfixturevalue(next(n for n in names if n in request.fixturenames))

    def start(**env: Any) -> HostProcess:
        process = HostProcess(broker, ledger, tmp_path, app=HOSTILE_APP, **env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    ledger.client.delete(f"{ledger.key}:kills", f"{ledger.key}:raised")
    for process in started:
        assert broker.password not in process.text(), "the broker password leaked"


# -- helpers --------------------------------------------------------------------------------------


def settled(broker: ChaosBroker) -> bool:
    return broker.depth() == 0 and broker.unacked() == 0 and broker.delayed() == 0


def restarts(host: HostProcess) -> list[dict[str, Any]]:
    """Loop crashes and restarts inside the host (a handler's doing must cause none)."""
    return [e for e in host.events() if e["event"] in ("worker_crashed", "worker_restarting")]


def dead_ids(dead: list[tuple[bytes, dict[str, Any]]]) -> list[int]:
    return sorted(json.loads(body)["id"] for body, _ in dead)


# -- 1-3: whatever a handler raises ---------------------------------------------------------------


@pytest.mark.parametrize("handler", ["sync", "async"])
def test_whatever_a_handler_raises_is_a_failed_message_and_the_loop_lives(
    any_broker, ledger, hostile, handler
):
    """KeyboardInterrupt, SystemExit, GeneratorExit, a custom BaseException and an exception
    whose str() and repr() raise: each retried, then dead-lettered; no loop restart; exit 0.
    With ``async def`` handlers, every good message is recorded after an await: one acked
    before its coroutine ran would be missing from the ledger."""
    broker = any_broker
    good, each, max_retries = 200, 2, 1
    hostile_bodies = [
        {"id": 1000 + 10 * n + k, "raise": name}
        for n, name in enumerate(RAISES)
        for k in range(each)
    ]
    broker.publish([{"id": i} for i in range(good)] + hostile_bodies)
    began = time.monotonic()
    host = hostile(CHAOS_ASYNC="1" if handler == "async" else "", CHAOS_MAX_RETRIES=max_retries)
    wait_until(
        lambda: ledger.handled() >= good and broker.dlq_depth() >= len(hostile_bodies),
        timeout=60,
        what="good messages handled and hostile ones dead-lettered",
    )
    wait_until(lambda: settled(broker), timeout=30, what="an empty queue")
    seconds = time.monotonic() - began
    assert host.terminate() == 0
    dead = broker.drain_dlq()
    raised = ledger.counts(":raised")
    counts = ledger.counts()
    by_type = {json.loads(body)["raise"]: headers for body, headers in dead}
    record(
        f"hostile-handler-{handler}",
        broker.kind,
        sent=good + len(hostile_bodies),
        handled=len(counts),
        dead_lettered=len(dead),
        lost=good + len(hostile_bodies) - len(counts) - len(dead),
        restarts=len(restarts(host)),
        seconds=round(seconds, 1),
    )
    assert set(counts) == set(range(good)), "every good message handled (after its await)"
    assert dead_ids(dead) == sorted(b["id"] for b in hostile_bodies)
    assert set(raised.values()) == {max_retries + 1}, "retried, then dead-lettered"
    for name in RAISES:
        assert by_type[name]["x-error-type"] == name
        assert by_type[name]["x-attempts"] == max_retries + 1
    assert by_type["Unprintable"]["x-error"] == "<unprintable exception>"
    assert restarts(host) == []


# -- 4: what the transport cannot parse -----------------------------------------------------------


def deep_table(depth: int) -> dict[str, Any]:
    table: object = "leaf"
    for _ in range(depth):
        table = {"a": table}
    return {"deep": table, "kept": "yes"}


def _redis_envelope(body: bytes, content_encoding: str) -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": "application/json",
            "headers": {},
            "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
        }
    ).encode()


def publish_unparseable(broker: ChaosBroker) -> dict[str, str]:
    """Messages the transport itself cannot read; returns case -> the reason expected."""
    if broker.kind == "redis":
        client = redis.Redis.from_url(broker.url())
        client.lpush(broker.queue, _redis_envelope(b'{"id": 9001}', "klingon"))
        client.lpush(broker.queue, b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        client.lpush(broker.queue, b"\xff\xfe garbage \x00")
        return {
            "unknown content-encoding": "unknown_content_encoding",
            "100,000-deep JSON envelope": "not_an_envelope",
            "garbage": "not_an_envelope",
        }
    if broker.streams:
        client = broker.client()
        client.xadd(broker.queue, {"payload": b"x", "content-type": b"text/plain"})
        client.xadd(broker.queue, {"body": b"{}", "headers": b"[" * 100_000 + b"]" * 100_000})
        client.xadd(broker.queue, {"body": b"{}", "content-type": b"application/\xff\xfe"})
        return {
            "garbage fields": "missing_body",
            "100,000-deep headers": "bad_headers",
            "non-UTF-8 field": "invalid_utf8",
        }
    connection = amqp.Connection(
        host=f"127.0.0.1:{broker.port}", userid=broker.user, password=broker.password
    )
    connection.connect()
    try:
        channel = connection.channel()
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)  # for this publisher's encoder only
        try:
            channel.basic_publish(
                amqp.Message(
                    b'{"id": 9001}',
                    content_type="application/json",
                    application_headers=deep_table(1500),
                    delivery_mode=2,
                ),
                exchange="",
                routing_key=broker.queue,
            )
        finally:
            sys.setrecursionlimit(limit)
        channel.basic_publish(
            amqp.Message(
                b"\x1f\x8b\x08",
                content_type="application/json",
                content_encoding="x-gzip-unknown",
                delivery_mode=2,
            ),
            exchange="",
            routing_key=broker.queue,
        )
        channel.basic_publish(
            amqp.Message(
                b"zz",
                content_type="application/json",
                application_headers={"compression": "application/x-unknown"},
                delivery_mode=2,
            ),
            exchange="",
            routing_key=broker.queue,
        )
    finally:
        connection.close()
    return {
        "1,500-deep header table": "unparseable_properties",
        "unknown content-encoding": "unknown_content_encoding",
        "unknown compression": "undecompressable",
    }


def test_what_the_transport_cannot_parse_is_dead_lettered_with_its_reason(
    any_broker, ledger, hostile
):
    broker = any_broker
    good = 200
    broker.publish([{"id": i} for i in range(good // 2)])
    expected = publish_unparseable(broker)
    broker.publish([{"id": i} for i in range(good // 2, good)], verify=False)
    began = time.monotonic()
    host = hostile()
    wait_until(
        lambda: ledger.handled() >= good and broker.dlq_depth() >= len(expected),
        timeout=60,
        what="good messages handled and unparseable ones dead-lettered",
    )
    wait_until(lambda: settled(broker), timeout=30, what="an empty queue")
    seconds = time.monotonic() - began
    assert host.terminate() == 0
    dead = broker.drain_dlq()
    reasons = sorted(headers.get("x-error-reason", "") for _, headers in dead)
    counts = ledger.counts()
    record(
        "hostile-unparseable",
        broker.kind,
        cases=sorted(expected),
        sent=good + len(expected),
        handled=len(counts),
        dead_lettered=len(dead),
        lost=good + len(expected) - len(counts) - len(dead),
        restarts=len(restarts(host)),
        seconds=round(seconds, 1),
    )
    assert reasons == sorted(expected.values())
    assert all(headers["x-error"] for _, headers in dead)
    assert set(counts) == set(range(good))
    assert restarts(host) == []


# -- 5: a stalled host on a Redis list ------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_host_stalled_past_its_alive_ttl_re_registers_and_its_kill_strands_nothing(
    redis_broker, ledger, hostile
):
    """Two hosts on one list; one SIGSTOPped until the other has swept its processing list
    (its alive key lapses after 15 s, and the app cannot shorten it: this scenario waits for
    real, 15-35 s), then SIGCONT: it registers again; SIGKILLed later, what it held comes back."""
    broker = redis_broker
    client = broker.client()
    consumers = f"consumer-host:{broker.queue}:consumers"
    total = 1200
    broker.publish([{"id": i} for i in range(total)])
    began = time.monotonic()
    stalled = hostile(CHAOS_WORK_MS=20)
    survivor = hostile(CHAOS_WORK_MS=20)
    ident = f"@{os.uname().nodename}-{stalled.process.pid}-"  # then the start's own token

    def stalled_member() -> str | None:
        return next((m.decode() for m in client.smembers(consumers) if ident.encode() in m), None)

    def held(member: str) -> int:
        return int(client.llen(f"consumer-host:{broker.queue}:processing:{member}"))

    wait_until(lambda: stalled_member() is not None, timeout=30, what="the first host registered")
    member = stalled_member()
    wait_until(lambda: held(member) > 0, timeout=30, what="the first host holding messages")
    stalled.freeze()
    frozen = time.monotonic()
    wait_until(lambda: stalled_member() is None, timeout=45, what="the stalled host swept")
    swept_after = time.monotonic() - frozen
    assert held(member) == 0, "the sweep took its processing list back"
    stalled.thaw()
    wait_until(lambda: stalled_member() is not None, timeout=10, what="re-registered")
    # More work, so the thawed host has something to fetch even if the survivor emptied the
    # queue while it was frozen (it does on a slow machine).
    more = 600
    broker.publish([{"id": i} for i in range(total, total + more)], verify=False)
    total += more
    wait_until(lambda: held(member) > 0, timeout=30, what="the thawed host fetching again")
    stalled.kill()
    assert stalled_member() == member, "still registered when killed: a sweep will find it"
    killed = time.monotonic()
    wait_until(lambda: ledger.handled() >= total, timeout=60, what="every message handled")
    recovered_after = time.monotonic() - killed
    wait_until(lambda: settled(broker), timeout=30, what="an empty queue")
    assert survivor.terminate() == 0
    counts = ledger.counts()
    record(
        "hostile-stalled-host",
        broker.kind,
        sent=total,
        handled=len(counts),
        dead_lettered=0,
        lost=total - len(counts),
        duplicates=sum(c - 1 for c in counts.values()),
        stalled_seconds=round(swept_after, 1),
        recovered_after_kill_seconds=round(recovered_after, 1),
        seconds=round(time.monotonic() - began, 1),
    )
    assert set(counts) == set(range(total))
    assert broker.dlq_depth() == 0
    assert any(e["event"] for e in stalled.events()), "the stalled host logged"


# -- 6: a message that kills the process ----------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_message_that_kills_the_process_is_dead_lettered_after_max_deliveries(
    any_broker, ledger, hostile
):
    """One ``os._exit(1)`` among good messages; the host is restarted each time it dies, as a
    platform would. AMQP runs on a quorum queue (classic queues count no deliveries)."""
    broker = any_broker
    good, killer, max_deliveries = 300, 5000, 2
    env: dict[str, Any] = {
        "CHAOS_MAX_DELIVERIES": max_deliveries,
        "CHAOS_PREFETCH": 10,
        "CHAOS_CLAIM_AFTER": 1,
        "CHAOS_WORK_MS": 2,
    }
    if broker.kind == "amqp":
        broker.queue_arguments = {"x-queue-type": "quorum"}
        env["CHAOS_QUORUM"] = "1"
    bodies = [{"id": i} for i in range(good)]
    bodies.insert(good // 3, {"id": killer, "kill": True})
    broker.publish(bodies)
    began = time.monotonic()
    host = hostile(**env)
    restarted = 0
    deadline = time.monotonic() + 180
    while not (ledger.handled() >= good and broker.dlq_depth() >= 1 and settled(broker)):
        if broker.dlq_depth() > 1:
            break  # more than the killer dead-lettered: the assertions below say which
        assert time.monotonic() < deadline, "not settled within 180 s"
        code = host.process.poll()
        if code is not None:
            assert code == 1, "only the killer ends the process"
            restarted += 1
            assert restarted <= max_deliveries + 1, "a crash loop"
            host = hostile(**env)
        threading.Event().wait(0.2)
    seconds = time.monotonic() - began
    assert host.terminate() == 0
    dead = broker.drain_dlq()
    counts = ledger.counts()
    kills = ledger.counts(":kills")
    record(
        "hostile-killer",
        broker.kind,
        queue="quorum" if broker.kind == "amqp" else broker.kind,
        max_deliveries=max_deliveries,
        sent=len(bodies),
        handled=len(counts),
        dead_lettered=len(dead),
        lost=len(bodies) - len(counts) - len(dead),
        restarts=restarted,
        seconds=round(seconds, 1),
    )
    assert dead_ids(dead) == [killer], "the killer, and no batch-mate, dead-lettered"
    assert kills == {killer: max_deliveries}
    assert restarted == max_deliveries
    assert set(counts) == set(range(good))


# -- 7: AMQP dead-letter queue deleted or full ----------------------------------------------------


def amqp_depth(broker: ChaosBroker, name: str) -> int | None:
    """Messages in ``name``, or ``None`` if it does not exist (a passive declare creates
    nothing)."""
    with Connection(broker.url()) as conn:
        channel = conn.channel()
        try:
            return int(channel.queue_declare(queue=name, passive=True).message_count)
        except amqp.exceptions.NotFound:
            return None


def test_a_full_amqp_dead_letter_queue_leaves_the_originals_in_their_queue(
    amqp_broker, ledger, hostile
):
    broker = amqp_broker
    good, poison = 200, 5
    dlq = f"{broker.queue}.dlq"
    with Connection(broker.url()) as conn:
        conn.channel().queue_declare(
            queue=dlq,
            durable=True,
            auto_delete=False,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
    bodies = [{"id": 1000 + i, "raise": "Hostile"} for i in range(poison)]
    bodies += [{"id": i} for i in range(good)]
    broker.publish(bodies)
    began = time.monotonic()
    host = hostile(CHAOS_MAX_RETRIES=1)
    wait_until(lambda: ledger.handled() >= good, timeout=90, what="every good message handled")
    seconds = time.monotonic() - began
    wait_until(
        lambda: sum(e["event"] == "copy_refused" for e in host.events()) >= poison,
        timeout=30,
        what="refusals seen",
    )
    assert host.process.poll() is None, "the host runs on"
    assert host.terminate() == 0
    refused = [e for e in host.events() if e["event"] == "copy_refused"]
    left = broker.depth()
    counts = ledger.counts()
    record(
        "hostile-amqp-dlq-full",
        broker.kind,
        sent=len(bodies),
        handled=len(counts),
        dead_lettered=0,
        still_queued=left,
        lost=len(bodies) - len(counts) - left,
        refusals=len(refused),
        restarts=len(restarts(host)),
        seconds=round(seconds, 1),
    )
    assert set(counts) == set(range(good))
    assert left == poison, "the originals are back in their queue"
    assert amqp_depth(broker, dlq) == 0
    assert max(e["delay"] for e in refused) > min(e["delay"] for e in refused), "backs off"
    assert restarts(host) == []


def test_an_amqp_dead_letter_queue_deleted_while_running_loses_nothing(
    amqp_broker, ledger, hostile
):
    broker = amqp_broker
    dlq = f"{broker.queue}.dlq"
    first = [{"id": 1000 + i, "raise": "Hostile"} for i in range(3)] + [
        {"id": i} for i in range(100)
    ]
    broker.publish(first)
    began = time.monotonic()
    host = hostile(CHAOS_MAX_RETRIES=1)
    wait_until(lambda: (amqp_depth(broker, dlq) or 0) >= 3, timeout=60, what="dead-lettered")
    with Connection(broker.url()) as conn:
        conn.channel().queue_delete(dlq)
    assert amqp_depth(broker, dlq) is None
    second = [{"id": 2000 + i, "raise": "Hostile"} for i in range(3)] + [
        {"id": i} for i in range(100, 200)
    ]
    broker.publish(second, verify=False)
    wait_until(lambda: ledger.handled() >= 200, timeout=60, what="every good message handled")
    wait_until(
        lambda: (amqp_depth(broker, dlq) or 0) + broker.depth() >= 3 and broker.unacked() == 0,
        timeout=60,
        what="the second poison settled somewhere",
    )
    seconds = time.monotonic() - began
    assert host.process.poll() is None, "the host runs on"
    assert host.terminate() == 0
    dead = broker.drain_dlq()
    left = broker.depth()
    counts = ledger.counts()
    sent = len(first) + len(second)
    record(
        "hostile-amqp-dlq-deleted",
        broker.kind,
        sent=sent,
        handled=len(counts),
        dead_lettered=len(dead),
        dropped_with_the_queue=3,
        still_queued=left,
        lost=sent - 3 - len(counts) - len(dead) - left,
        restarts=len(restarts(host)),
        seconds=round(seconds, 1),
    )
    assert set(counts) == set(range(200))
    assert dead_ids(dead) == [2000, 2001, 2002], "the queue was declared again and took them"
    assert left == 0
    assert restarts(host) == []


# -- 8: Redis lists' dead-letter key of the wrong type --------------------------------------------


def test_a_redis_dead_letter_key_of_the_wrong_type_leaves_the_poison_in_the_queue(
    redis_broker, ledger, hostile
):
    broker = redis_broker
    good, poison = 200, 3
    client = broker.client()
    client.set(f"{broker.queue}.dlq", "not a list")
    bodies = [{"id": 1000 + i, "raise": "Hostile"} for i in range(poison)]
    bodies += [{"id": i} for i in range(good)]
    broker.publish(bodies)
    began = time.monotonic()
    host = hostile(CHAOS_MAX_RETRIES=1)
    wait_until(lambda: ledger.handled() >= good, timeout=60, what="every good message handled")
    wait_until(
        lambda: sum(e["event"] == "copy_refused" for e in host.events()) >= poison,
        timeout=30,
        what="refusals seen",
    )
    seconds = time.monotonic() - began
    assert host.process.poll() is None
    assert host.terminate() == 0
    left = broker.depth() + broker.delayed()
    counts = ledger.counts()
    record(
        "hostile-redis-dlq-wrong-type",
        broker.kind,
        sent=len(bodies),
        handled=len(counts),
        dead_lettered=0,
        still_queued=left,
        lost=len(bodies) - len(counts) - left,
        restarts=len(restarts(host)),
        seconds=round(seconds, 1),
    )
    assert set(counts) == set(range(good))
    assert left == poison
    assert broker.unacked() == 0
    assert client.get(f"{broker.queue}.dlq") == b"not a list", "nothing written over it"
    assert restarts(host) == []


# -- 9: passwords in a Redis URL's query string ---------------------------------------------------


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
        return response.read().decode()


def test_passwords_in_a_redis_url_query_string_appear_nowhere(redis_broker, ledger, hostile):
    """The canary user's password in userinfo and a second canary as ``?password=`` (redis-py
    reads it; the userinfo one wins); then ``check`` against a closed port with secrets only
    in the query string (``password``, ``ssl_keyfile_password``)."""
    import socket

    broker = redis_broker
    second = f"QUERYCANARY{uuid.uuid4().hex[:12]}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health = probe.getsockname()[1]
    broker.publish([{"id": i} for i in range(50)])
    host = hostile(
        url=f"{broker.url()}?password={second}",
        CONSUMER_HOST_HEALTH_PORT=health,
        CONSUMER_HOST_HEALTH_HOST="127.0.0.1",
    )
    wait_until(lambda: ledger.handled() >= 50, timeout=30, what="handled")
    pages = [_get(health, "/status"), _get(health, "/metrics")]
    assert host.terminate() == 0
    outputs = [host.text(), *pages]
    third = f"CHECKCANARY{uuid.uuid4().hex[:12]}"
    checks = []
    for url in (
        f"redis://127.0.0.1:1/0?password={third}",
        f"redis://127.0.0.1:1/0?ssl_keyfile_password={third}&password={third}",
        f"redis://{broker.user}:{third}@127.0.0.1:1/0?ssl_keyfile_password={third}",
    ):
        env = {
            **os.environ,
            "CONSUMER_HOST_BROKER_URL": url,
            "CHAOS_QUEUE": broker.queue,
            "CHAOS_LEDGER_URL": LEDGER_URL,
            "CHAOS_LEDGER_KEY": ledger.key,
        }
        done = subprocess.run(
            [COMMAND, "check", HOSTILE_APP],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        checks.append(done.returncode)
        outputs.append(done.stdout + done.stderr)
    hits = sum(
        text.count(secret) for text in outputs for secret in (broker.password, second, third)
    )
    record(
        "hostile-query-password",
        broker.kind,
        outputs_searched=len(outputs),
        canary_hits=hits,
        check_exit_codes=checks,
    )
    assert set(range(50)) == set(ledger.counts())
    assert hits == 0
    assert all(code != 0 for code in checks), "an unreachable broker fails the check"


# -- 10: SIGHUP -----------------------------------------------------------------------------------


def test_sighup_drains_like_sigterm(any_broker, ledger, hostile):
    broker = any_broker
    total = 300
    broker.publish([{"id": i} for i in range(total)])
    host = hostile(CHAOS_WORK_MS=100, CHAOS_POOL=2, CONSUMER_HOST_DRAIN_TIMEOUT=10)
    wait_until(lambda: ledger.handled() >= 20, timeout=30, what="handling")
    began = time.monotonic()
    code = host.hang_up(timeout=15)
    drain = time.monotonic() - began
    started, done = ledger.counts(":started"), ledger.counts()
    assert code == 0
    assert set(started) == set(done), "every handler that started completed and was recorded"
    assert broker.unacked() == 0
    assert broker.depth() == total - len(done)
    hostile()
    wait_until(lambda: ledger.handled() >= total, timeout=60, what="the rest handled")
    wait_until(lambda: settled(broker), timeout=30, what="an empty queue")
    counts = ledger.counts()
    record(
        "hostile-sighup",
        broker.kind,
        sent=total,
        handled=len(counts),
        dead_lettered=0,
        lost=total - len(counts),
        duplicates=sum(c - 1 for c in counts.values()),
        drain_seconds=round(drain, 2),
        exit_code=code,
    )
    assert set(counts) == set(range(total))
    assert sum(c - 1 for c in counts.values()) == 0
