"""The reliability suite: the real command, real brokers, faults on purpose, every message counted.

Each scenario runs on RabbitMQ and on Redis with a canary password in the broker URL; the
``hosts`` fixture fails the test if that password appears in any output. Figures go to
``.chaos-results.jsonl`` for docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import threading
import time
import urllib.request

import pytest

from tests.helpers import wait_until

from .faultproxy import FaultProxy
from .harness import record


def rss_and_threads(pid: int) -> tuple[int, int]:
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


def settle(broker, ledger, expected: int, timeout: float = 120) -> None:
    wait_until(lambda: ledger.handled() >= expected, timeout=timeout, what=f"{expected} handled")
    wait_until(
        lambda: broker.depth() == 0 and broker.unacked() == 0 and broker.delayed() == 0,
        timeout=60,
        what="an empty queue with nothing unacked",
    )


def test_sigkill_storm_loses_nothing(any_broker, ledger, hosts):
    """20,000 messages, pool 4, SIGKILL at 5 random moments, restarted each time; on Redis
    Streams every id is handled within claim_after + 30 s of the last restart."""
    chaos_broker = any_broker
    total, prefetch, pool, kills, claim_after = 20_000, 20, 4, 5, 10.0
    chaos_broker.publish([{"id": i} for i in range(total)])
    rng = random.Random(20_000)
    marks = sorted(rng.sample(range(total // 10, total * 8 // 10), kills))
    began = time.monotonic()
    options = {"CHAOS_POOL": pool, "CHAOS_PREFETCH": prefetch, "CHAOS_CLAIM_AFTER": claim_after}
    host = hosts(**options)
    for mark in marks:
        wait_until(lambda m=mark: ledger.handled() >= m, timeout=120, what=f"{mark} handled")
        host.kill()
        host = hosts(**options)
    last_restart = time.monotonic()
    settle(chaos_broker, ledger, total, timeout=180)
    elapsed = time.monotonic() - began
    after_restart = time.monotonic() - last_restart
    assert host.terminate() == 0
    counts = ledger.counts()
    lost = total - len(counts)
    duplicates = sum(c - 1 for c in counts.values())
    record(
        "sigkill-storm",
        chaos_broker.kind,
        messages=total,
        kills=kills,
        lost=lost,
        duplicates=duplicates,
        bound=prefetch * pool * kills,
        seconds=round(elapsed, 1),
        settled_after_last_restart=round(after_restart, 1),
    )
    assert lost == 0
    assert set(counts) == set(range(total))
    assert duplicates <= prefetch * pool * kills
    if chaos_broker.streams:
        assert after_restart <= claim_after + 30


def test_sigterm_drain_finishes_what_it_started_and_duplicates_nothing(chaos_broker, ledger, hosts):
    total = 300
    chaos_broker.publish([{"id": i} for i in range(total)])
    host = hosts(CHAOS_WORK_MS=200, CHAOS_POOL=4, CHAOS_PREFETCH=10, CONSUMER_HOST_DRAIN_TIMEOUT=10)
    wait_until(lambda: ledger.handled() >= 20, timeout=30)
    began = time.monotonic()
    code = host.terminate(timeout=15)
    drain = time.monotonic() - began
    started = ledger.counts(":started")
    done = ledger.counts()
    assert code == 0
    assert drain < 10, "exited inside the drain timeout"
    assert set(started) == set(done), "every handler that started completed and was recorded"
    assert chaos_broker.unacked() == 0
    assert chaos_broker.depth() == total - len(done), "the rest went back to the queue"
    after_first = len(done)
    host = hosts(CHAOS_WORK_MS=1, CHAOS_POOL=4)
    settle(chaos_broker, ledger, total)
    counts = ledger.counts()
    duplicates = sum(c - 1 for c in counts.values())
    record(
        "sigterm-drain",
        chaos_broker.kind,
        messages=total,
        handled_before_stop=after_first,
        drain_seconds=round(drain, 2),
        lost=total - len(counts),
        duplicates=duplicates,
    )
    assert set(counts) == set(range(total))
    assert duplicates == 0


def test_poison_messages_end_in_the_dead_letter_queue_without_restarts(chaos_broker, ledger, hosts):
    total, poison_every = 10_000, 10
    chaos_broker.publish([{"id": i, "poison": i % poison_every == 0} for i in range(total)])
    began = time.monotonic()
    host = hosts(CHAOS_MAX_RETRIES=2)
    poison = total // poison_every
    wait_until(
        lambda: ledger.handled() >= total - poison and chaos_broker.dlq_depth() >= poison,
        timeout=180,
        what="all settled",
    )
    settle(chaos_broker, ledger, total - poison)
    elapsed = time.monotonic() - began
    assert host.terminate() == 0
    dead = chaos_broker.drain_dlq()
    dead_ids = sorted(json.loads(body)["id"] for body, _ in dead)
    events = host.events()
    restarts = [e for e in events if e["event"] in ("worker_crashed", "worker_restarting")]
    record(
        "poison",
        chaos_broker.kind,
        messages=total,
        poison=poison,
        dead_lettered=len(dead),
        acked=ledger.handled(),
        loop_restarts=len(restarts),
        seconds=round(elapsed, 1),
    )
    assert dead_ids == list(range(0, total, poison_every))
    assert all(h["x-attempts"] == 3 and h["x-error-type"] == "RuntimeError" for _, h in dead)
    assert set(ledger.counts()) == {i for i in range(total) if i % poison_every}
    assert restarts == []


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/consumer-host-pwned",))


BAD_INPUTS = [
    ("invalid_json", b"{not json", "application/json", "invalid_json"),
    ("truncated_json", b'{"id": 1', "application/json", "invalid_json"),
    ("empty_body", b"", "application/json", "invalid_json"),
    ("whitespace_body", b"   \n", "application/json", "invalid_json"),
    ("invalid_utf8", b'{"id": "\xc3\x28"}', "application/json", "invalid_utf8"),
    ("utf16_json", '{"id": 1}'.encode("utf-16"), "application/json", "invalid_utf8"),
    ("binary_garbage", bytes(range(256)), "application/json", "invalid_utf8"),
    ("deep_nesting", b"[" * 2000 + b"]" * 2000, "application/json", "invalid_json"),
    ("too_large", b'{"id": "' + b"x" * 5000 + b'"}', "application/json", "too_large"),
    ("text_plain", b"hello", "text/plain", "content_type_not_accepted"),
    ("yaml", b"id: 1", "application/x-yaml", "content_type_not_accepted"),
    ("msgpack", b"\x81\xa2id\x01", "application/x-msgpack", "content_type_not_accepted"),
    (
        "pickle",
        pickle.dumps(_Exploit()),
        "application/x-python-serialize",
        "content_type_not_accepted",
    ),
    ("missing_content_type", b'{"id": 1}', None, "missing_content_type"),
    ("xml", b"<id>1</id>", "application/xml", "content_type_not_accepted"),
    ("json_array", b"[1, 2, 3]", "application/json", "max retries exceeded"),
    ("json_null", b"null", "application/json", "max retries exceeded"),
]


def test_bad_input_catalog_is_dead_lettered_with_reasons_and_the_loop_lives(
    chaos_broker, ledger, hosts
):
    good = 200
    raw = [(body, content_type) for _, body, content_type, _ in BAD_INPUTS]
    chaos_broker.publish([{"id": i} for i in range(good)], raw=raw)
    host = hosts(CHAOS_POOL=1, CHAOS_MAX_RETRIES=1)
    wait_until(lambda: chaos_broker.dlq_depth() >= len(BAD_INPUTS), timeout=60, what="DLQ")
    settle(chaos_broker, ledger, good)
    assert host.terminate() == 0
    dead = chaos_broker.drain_dlq()
    reasons = sorted(h.get("x-error-reason", "max retries exceeded") for _, h in dead)
    events = host.events()
    errors = [e for e in events if e["level"] in ("error", "critical")]
    crashed = [e for e in events if e["event"] == "worker_crashed"]
    record(
        "bad-input",
        chaos_broker.kind,
        kinds=len(BAD_INPUTS),
        dead_lettered=len(dead),
        error_lines=len(errors),
        good_handled=ledger.handled(),
        loop_restarts=len(crashed),
    )
    assert reasons == sorted(reason for *_, reason in BAD_INPUTS)
    assert all(h["x-error"] for _, h in dead)
    assert len(errors) <= len(BAD_INPUTS), "at most one error line each"
    assert crashed == []
    assert set(ledger.counts()) == set(range(good))
    assert not os.path.exists("/tmp/consumer-host-pwned"), "the pickle never ran"


def test_a_crash_loop_trips_at_max_restarts_and_a_critical_one_exits_1(chaos_broker, ledger, hosts):
    chaos_broker.publish([{"id": i} for i in range(50)])
    host = hosts(CHAOS_CRASHY="yes", CHAOS_POOL=1)
    wait_until(lambda: any(e["event"] == "worker_tripped" for e in host.events()), timeout=30)
    settle(chaos_broker, ledger, 50)
    crashes = [
        e for e in host.events() if e["event"] == "worker_crashed" and e["worker"] == "crashy"
    ]
    assert len(crashes) == 5
    assert host.process.poll() is None, "a non-critical trip leaves the host running"
    assert host.terminate() == 0
    critical = hosts(CHAOS_CRASHY="critical", CHAOS_POOL=1)
    code = critical.process.wait(60)
    record(
        "crash-loop", chaos_broker.kind, failures_before_trip=len(crashes), critical_exit_code=code
    )
    assert code == 1


def test_fifty_reconnects_grow_neither_threads_nor_memory(chaos_broker, ledger, hosts):
    proxy = FaultProxy(("127.0.0.1", chaos_broker.port)).start()
    try:
        host = hosts(
            url=chaos_broker.url(proxy.port),
            CHAOS_POOL=2,
            CHAOS_BREAKER_THRESHOLD=1000,
            CHAOS_RECONNECT_MIN=0.05,
            CHAOS_RECONNECT_MAX=0.2,
        )

        def connects():
            return sum(
                e["event"] in ("consumer_connected", "consumer_reconnected") for e in host.events()
            )

        wait_until(lambda: connects() >= 2, timeout=30)
        for _ in range(5):  # warm up: first reconnects allocate what later ones reuse
            before = connects()
            proxy.cut()
            wait_until(lambda b=before: connects() >= b + 2, timeout=30)
        rss_before, threads_before = rss_and_threads(host.process.pid)
        for _ in range(50):
            before = connects()
            proxy.cut()
            wait_until(lambda b=before: connects() >= b + 2, timeout=30, what="reconnects")
        threading.Event().wait(1.0)
        rss_after, threads_after = rss_and_threads(host.process.pid)
        chaos_broker.publish([{"id": i} for i in range(100)], verify=False)
        settle(chaos_broker, ledger, 100)
        record(
            "reconnect-leak",
            chaos_broker.kind,
            reconnects=50,
            rss_kb_before=rss_before,
            rss_kb_after=rss_after,
            threads_before=threads_before,
            threads_after=threads_after,
        )
        assert threads_after <= threads_before + 1
        assert rss_after < rss_before * 1.10
    finally:
        proxy.stop()


def test_cuts_and_black_holes_are_survived_and_noticed_within_two_heartbeats(
    chaos_broker, ledger, hosts
):
    total, heartbeat = 4000, 2.0
    chaos_broker.publish([{"id": i} for i in range(total)])
    proxy = FaultProxy(("127.0.0.1", chaos_broker.port)).start()
    detections = []
    try:
        host = hosts(
            url=chaos_broker.url(proxy.port),
            CHAOS_POOL=2,
            CHAOS_WORK_MS=2,
            CHAOS_HEARTBEAT=heartbeat,
            CHAOS_BREAKER_THRESHOLD=1000,
        )

        def disconnects():
            return sum(e["event"] == "consumer_disconnected" for e in host.events())

        for fault in range(5):
            wait_until(lambda f=fault: ledger.handled() >= (f + 1) * total // 12, timeout=60)
            proxy.cut()
            wait_until(
                lambda f=fault: ledger.handled() >= (f + 1) * total // 12 + 100,
                timeout=60,
                what="progress after a cut",
            )
            before = disconnects()
            began = time.monotonic()
            proxy.blackhole()
            wait_until(
                lambda b=before: disconnects() >= b + 1,
                timeout=4 * heartbeat + 10,
                what="the black hole noticed",
            )
            detections.append(time.monotonic() - began)
            proxy.forward()
        settle(chaos_broker, ledger, total, timeout=120)
        counts = ledger.counts()
        record(
            "cut-and-blackhole",
            chaos_broker.kind,
            messages=total,
            cuts=5,
            blackholes=5,
            lost=total - len(counts),
            duplicates=sum(c - 1 for c in counts.values()),
            worst_detection_seconds=round(max(detections), 2),
            heartbeat=heartbeat,
        )
        assert set(counts) == set(range(total))
        # py-amqp gives up two heartbeats after the last frame it read; the broker sends one
        # every half heartbeat, and the consumer looks at least every half second.
        assert max(detections) <= 2 * heartbeat + 0.75
    finally:
        proxy.stop()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_a_thirty_second_outage_opens_the_breaker_and_readiness_follows(
    chaos_broker, ledger, hosts
):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health = probe.getsockname()[1]
    total = 3000
    chaos_broker.publish([{"id": i} for i in range(total)])
    proxy = FaultProxy(("127.0.0.1", chaos_broker.port)).start()
    outage = float(os.environ.get("CHAOS_OUTAGE_SECONDS", "30"))
    try:
        host = hosts(
            url=chaos_broker.url(proxy.port),
            CHAOS_POOL=2,
            CHAOS_WORK_MS=2,
            CHAOS_HEARTBEAT=2,
            CHAOS_BREAKER_COOLDOWN=3,
            CONSUMER_HOST_HEALTH_PORT=health,
            CONSUMER_HOST_HEALTH_HOST="127.0.0.1",
        )
        wait_until(lambda: _get(health, "/readyz")[0] == 200, timeout=30, what="ready")
        wait_until(lambda: ledger.handled() >= 500, timeout=60)
        proxy.offline()
        began = time.monotonic()
        wait_until(lambda: _get(health, "/readyz")[0] == 503, timeout=10, what="not ready")
        not_ready_after = time.monotonic() - began
        assert _get(health, "/healthz")[0] == 200, "an outage is not a liveness failure"
        pages = [_get(health, "/status")[1], _get(health, "/metrics")[1]]
        threading.Event().wait(max(0.0, outage - (time.monotonic() - began)))
        proxy.online()
        back = time.monotonic()
        wait_until(lambda: _get(health, "/readyz")[0] == 200, timeout=30, what="ready again")
        ready_after = time.monotonic() - back
        settle(chaos_broker, ledger, total)
        pages += [_get(health, "/status")[1], _get(health, "/metrics")[1]]
        transitions = [
            (e["previous"], e["event"]) for e in host.events() if e["event"].startswith("breaker_")
        ]
        counts = ledger.counts()
        record(
            "outage",
            chaos_broker.kind,
            outage_seconds=outage,
            messages=total,
            lost=total - len(counts),
            not_ready_after_seconds=round(not_ready_after, 2),
            ready_after_return_seconds=round(ready_after, 2),
            breaker_transitions=len(transitions),
        )
        assert ("closed", "breaker_open") in transitions
        assert ("open", "breaker_half_open") in transitions
        assert ("half_open", "breaker_closed") in transitions
        assert set(counts) == set(range(total))
        assert all(chaos_broker.password not in page for page in pages)
        assert all(page for page in pages)
    finally:
        proxy.stop()


def test_soak_keeps_memory_and_threads_flat(chaos_broker, ledger, hosts):
    seconds = float(os.environ.get("CHAOS_SOAK_SECONDS", "60"))
    rate = 200
    host = hosts(CHAOS_POOL=2)
    stop = threading.Event()
    published = [0]

    def produce():
        next_id = 0
        while not stop.is_set():
            batch = [{"id": next_id + i} for i in range(rate // 5)]
            chaos_broker.publish(batch, verify=False)
            next_id += len(batch)
            published[0] = next_id
            stop.wait(0.2)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_until(lambda: ledger.handled() >= rate, timeout=30)
    threading.Event().wait(min(10.0, seconds / 6))  # warm-up before the baseline
    rss_start, threads_start = rss_and_threads(host.process.pid)
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        threading.Event().wait(5)
        samples.append(rss_and_threads(host.process.pid))
    stop.set()
    producer.join(10)
    settle(chaos_broker, ledger, published[0])
    rss_end, _ = rss_and_threads(host.process.pid)
    growth = (rss_end - rss_start) / rss_start
    record(
        "soak",
        chaos_broker.kind,
        seconds=seconds,
        messages=published[0],
        rss_kb_start=rss_start,
        rss_kb_end=rss_end,
        rss_growth_pct=round(growth * 100, 1),
        threads_start=threads_start,
        threads_max=max(t for _, t in samples),
    )
    assert growth < 0.10
    assert max(t for _, t in samples) <= threads_start + 1
    assert set(ledger.counts()) == set(range(published[0]))


pytestmark = pytest.mark.timeout(300)
