"""Consumers against kombu's in-process broker, RabbitMQ and Redis: the same tests on each."""

from __future__ import annotations

import json
import pickle
import threading
import time

import pytest
import structlog

from consumer_host import Host, Reject
from consumer_host.transports.broker import BrokerChoice

from .brokers import unique_queue
from .helpers import wait_until


def make_host(broker, name="shop"):
    host = Host(name)
    host.use_broker(BrokerChoice(broker.url, "test"))
    return host


def fast_retries():
    return {"retry_backoff_min": 0.01, "retry_backoff_max": 0.04}


class TestHandling:
    def test_five_thousand_messages_through_a_pool_of_three(self, broker):
        queue = unique_queue()
        seen = []
        lock = threading.Lock()
        broker.publish_many(queue, [{"n": n} for n in range(5000)])
        host = make_host(broker)

        @host.consumer("orders", queue=queue, pool=3, prefetch=50)
        def handle(message):
            with lock:
                seen.append(message.body["n"])

        host.start()
        try:
            wait_until(lambda: len(seen) >= 5000, timeout=90, what="5,000 messages")
        finally:
            assert host.stop(10) == ()
        assert sorted(seen) == list(range(5000))
        assert broker.depth(queue) == 0
        assert broker.depth(f"{queue}.dlq") == 0
        records = host.status()
        assert [r["instance"] for r in records] == ["orders-1", "orders-2", "orders-3"]
        assert sum(r["acked"] for r in records) == 5000
        assert sum(r["retried"] + r["dead_lettered"] for r in records) == 0
        assert all(r["queue"] == queue for r in records)

    def test_every_tenth_message_fails_and_is_dead_lettered_after_its_retries(self, broker):
        queue = unique_queue()
        attempts: dict[int, list[int]] = {}
        lock = threading.Lock()
        broker.publish_many(queue, [{"n": n} for n in range(50)])
        host = make_host(broker)

        @host.consumer("orders", queue=queue, pool=2, max_retries=3, **fast_retries())
        def handle(message):
            n = message.body["n"]
            with lock:
                attempts.setdefault(n, []).append(message.attempt)
            if n % 10 == 0:
                raise ValueError(f"order {n} is broken")

        host.start()
        try:
            wait_until(
                lambda: broker.depth(f"{queue}.dlq") >= 5, timeout=30, what="five dead letters"
            )
            wait_until(lambda: sum(len(a) for a in attempts.values()) >= 45 + 5 * 4)
        finally:
            host.stop(10)
        dead = broker.drain(f"{queue}.dlq")
        assert sorted(json.loads(body)["n"] for body, _, _ in dead) == [0, 10, 20, 30, 40]
        for _, headers, content_type in dead:
            assert content_type == "application/json"
            assert headers["x-error-type"] == "ValueError"
            assert headers["x-error"].startswith("order ")
            assert headers["x-error"].endswith("is broken")
            assert headers["x-original-queue"] == queue
            assert headers["x-attempts"] == 4
            assert headers["x-failed-at"].endswith("+00:00")
        for n, tries in attempts.items():
            assert tries == ([1, 2, 3, 4] if n % 10 == 0 else [1]), n
        records = host.status()
        assert sum(r["acked"] for r in records) == 45
        assert sum(r["retried"] for r in records) == 15
        assert sum(r["dead_lettered"] for r in records) == 5
        assert all(r["restarts"] == 0 for r in records)
        assert broker.depth(queue) == 0

    def test_reject_dead_letters_at_once(self, broker):
        queue = unique_queue()
        calls = []
        broker.publish(queue, {"bad": True}, message_id="m-1")
        host = make_host(broker)

        @host.consumer("orders", queue=queue)
        def handle(message):
            calls.append(message.message_id)
            raise Reject("customer does not exist")

        host.start()
        try:
            wait_until(lambda: broker.depth(f"{queue}.dlq") == 1, what="the dead letter")
        finally:
            host.stop(10)
        [(_, headers, _)] = broker.drain(f"{queue}.dlq")
        assert headers["x-error"] == "customer does not exist"
        assert headers["x-error-type"] == "Reject"
        assert headers["x-attempts"] == 1
        assert calls == ["m-1"]

    def test_the_message_carries_body_headers_and_id(self, broker):
        queue = unique_queue()
        got = []
        broker.publish(queue, {"id": 7}, headers={"tenant": "acme"}, message_id="abc")
        host = make_host(broker)
        host.consumer("orders", queue=queue)(got.append)
        host.start()
        try:
            wait_until(lambda: got)
        finally:
            host.stop(10)
        [message] = got
        assert message.body == {"id": 7}
        assert message.headers["tenant"] == "acme"
        assert message.message_id == "abc"
        assert message.content_type == "application/json"
        assert message.attempt == 1
        assert message.queue == queue
        assert message.redelivered is False


BAD_INPUTS = [
    ("invalid_json", b"{not json", "application/json", "invalid_json"),
    ("invalid_utf8", b'{"a": "\xff\xfe"}', "application/json", "invalid_utf8"),
    ("empty_body", b"", "application/json", "invalid_json"),
    ("text_plain", b"hello", "text/plain", "content_type_not_accepted"),
    ("yaml", b"a: 1", "application/x-yaml", "content_type_not_accepted"),
    ("missing_content_type", b'{"a": 1}', None, "missing_content_type"),
    (
        "pickle",
        pickle.dumps({"a": 1}),
        "application/x-python-serialize",
        "content_type_not_accepted",
    ),
    ("too_large", b'{"a": "' + b"x" * 2000 + b'"}', "application/json", "too_large"),
    ("binary_garbage", bytes(range(256)), "application/json", "invalid_utf8"),
]


class TestBadInput:
    def test_each_bad_input_is_dead_lettered_with_its_reason_and_the_loop_goes_on(self, broker):
        queue = unique_queue()
        for index, (_, body, content_type, _) in enumerate(BAD_INPUTS):
            broker.publish_raw(queue, body, content_type, message_id=f"bad-{index}")
        broker.publish(queue, {"good": True}, message_id="good")
        handled = []
        host = make_host(broker)
        host.consumer("orders", queue=queue, max_body_bytes=1000)(handled.append)
        with structlog.testing.capture_logs() as logs:
            host.start()
            try:
                wait_until(lambda: handled, what="the good message")
                wait_until(lambda: broker.depth(f"{queue}.dlq") == len(BAD_INPUTS))
            finally:
                host.stop(10)
        assert [m.message_id for m in handled] == ["good"]
        dead = broker.drain(f"{queue}.dlq")
        reasons = sorted(headers["x-error-reason"] for _, headers, _ in dead)
        assert reasons == sorted(reason for *_, reason in BAD_INPUTS)
        assert all(headers["x-error"] for _, headers, _ in dead)
        bodies = {body for body, _, _ in dead}
        assert {body for _, body, _, _ in BAD_INPUTS} == bodies, "the original bytes are kept"
        rejected = [e for e in logs if e["event"] == "message_rejected"]
        assert sorted(e["message_id"] for e in rejected) == sorted(
            f"bad-{i}" for i in range(len(BAD_INPUTS))
        )
        [too_large] = [e for e in rejected if e["reason"] == "too_large"]
        assert too_large["body"].count("x") == 200 - len('{"a": "'), "200 bytes of body at most"
        errors = [e for e in logs if e["log_level"] in ("error", "critical")]
        assert errors == []
        assert host.status()[0]["restarts"] == 0
        assert host.status()[0]["rejected_bad_input"] == len(BAD_INPUTS)

    def test_pickle_is_never_executed(self, broker, tmp_path):
        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        queue = unique_queue()
        broker.publish_raw(queue, pickle.dumps(Exploit()), "application/x-python-serialize")
        host = make_host(broker)
        host.consumer("orders", queue=queue)(lambda m: None)
        host.start()
        try:
            wait_until(lambda: broker.depth(f"{queue}.dlq") == 1)
        finally:
            host.stop(10)
        assert not marker.exists()


def test_not_a_kombu_envelope_on_redis_is_dead_lettered(redis_broker):
    real_broker = redis_broker
    queue = unique_queue()
    real_broker.lpush_raw(queue, b"\x00garbage that is no envelope")
    real_broker.publish(queue, {"ok": 1})
    handled = []
    host = make_host(real_broker)
    host.consumer("orders", queue=queue)(handled.append)
    host.start()
    try:
        wait_until(lambda: handled and real_broker.depth(f"{queue}.dlq") == 1)
    finally:
        host.stop(10)
    [(body, headers, _)] = real_broker.drain(f"{queue}.dlq")
    assert body == b"\x00garbage that is no envelope"
    assert headers["x-error-reason"] == "not_an_envelope"


class TestDrain:
    def test_stop_lets_the_in_flight_handler_finish_and_gives_the_rest_back(self, broker):
        queue = unique_queue()
        broker.publish_many(queue, [{"n": n} for n in range(30)])
        started = threading.Event()
        finished = []
        host = make_host(broker)

        @host.consumer("orders", queue=queue, prefetch=10)
        def handle(message):
            started.set()
            time.sleep(1.0)
            finished.append(message.body["n"])

        host.start()
        assert started.wait(10)
        unstopped = host.stop(10)
        assert unstopped == ()
        assert len(finished) == 1, "the in-flight handler completed; nothing new started"
        assert host.status()[0]["acked"] == 1
        remaining = broker.drain(queue)
        numbers = sorted(json.loads(body)["n"] for body, _, _ in remaining)
        assert numbers == sorted(set(range(30)) - set(finished)), "every other message is back"


class TestRedisRecovery:
    def test_a_dead_consumers_processing_list_is_recovered(self, redis_broker):
        """A consumer killed mid-message leaves it in its processing list; a live one takes it
        back once the dead one's alive key has expired."""
        import redis as redis_lib

        queue = unique_queue()
        redis_broker.publish(queue, {"orphan": True}, message_id="orphan")
        client = redis_lib.Redis.from_url(redis_broker.url)
        dead = "orders-9@gone-1"
        client.lmove(queue, f"consumer-host:{queue}:processing:{dead}", "RIGHT", "LEFT")
        client.sadd(f"consumer-host:{queue}:consumers", dead)
        assert client.llen(queue) == 0
        handled = []
        host = make_host(redis_broker)
        host.consumer("orders", queue=queue)(handled.append)
        host.start()
        try:
            wait_until(lambda: handled, what="the orphan")
        finally:
            host.stop(10)
        assert [m.message_id for m in handled] == ["orphan"]
        assert client.llen(f"consumer-host:{queue}:processing:{dead}") == 0
        assert not client.sismember(f"consumer-host:{queue}:consumers", dead)

    def test_a_live_consumers_processing_list_is_left_alone(self, redis_broker):
        import redis as redis_lib

        queue = unique_queue()
        redis_broker.publish(queue, {"busy": True})
        client = redis_lib.Redis.from_url(redis_broker.url)
        live = "orders-9@elsewhere-1"
        client.lmove(queue, f"consumer-host:{queue}:processing:{live}", "RIGHT", "LEFT")
        client.sadd(f"consumer-host:{queue}:consumers", live)
        client.set(f"consumer-host:{queue}:alive:{live}", "1", ex=60)
        handled = []
        host = make_host(redis_broker)
        host.consumer("orders", queue=queue)(handled.append)
        host.start()
        try:
            wait_until(lambda: host.status()[0]["connected"])
            threading.Event().wait(0.5)
        finally:
            host.stop(10)
        assert handled == []
        assert client.llen(f"consumer-host:{queue}:processing:{live}") == 1

    def test_a_graceful_stop_leaves_no_processing_list_behind(self, redis_broker):
        import redis as redis_lib

        queue = unique_queue()
        redis_broker.publish_many(queue, [{"n": n} for n in range(50)])
        host = make_host(redis_broker)
        started = threading.Event()

        @host.consumer("orders", queue=queue, prefetch=20)
        def handle(message):
            started.set()
            threading.Event().wait(0.2)

        host.start()
        assert started.wait(10)
        host.stop(10)
        client = redis_lib.Redis.from_url(redis_broker.url)
        assert client.keys(f"consumer-host:{queue}:processing:*") == []
        assert client.llen(queue) == 50 - host.status()[0]["acked"]


class TestAckCoalescing:
    @pytest.fixture
    def ack_calls(self, monkeypatch):
        """The ``multiple`` flag of every basic.ack py-amqp sends, in order."""
        import amqp.channel

        calls = []
        original = amqp.channel.Channel.basic_ack

        def counting(self, delivery_tag, multiple=False, **kwargs):
            calls.append(multiple)
            return original(self, delivery_tag, multiple=multiple, **kwargs)

        monkeypatch.setattr(amqp.channel.Channel, "basic_ack", counting)
        return calls

    def test_runs_of_acks_become_one_multiple_ack_and_idle_ones_are_flushed_soon(
        self, amqp_broker, ack_calls
    ):
        from .brokers import rabbit_unacked

        calls = ack_calls
        queue = unique_queue()
        amqp_broker.publish_many(queue, [{"n": n} for n in range(400)])
        seen = []
        host = make_host(amqp_broker)
        host.consumer("orders", queue=queue, prefetch=50)(seen.append)
        host.start()
        try:
            wait_until(lambda: len(seen) == 400, what="400 handled")
            wait_until(lambda: amqp_broker.depth(queue) == 0)
            amqp_broker.publish_many(queue, [{"n": n} for n in range(3)])
            wait_until(lambda: len(seen) == 403)
            # three acks, fewer than a batch: flushed by the 50 ms timer, not by stopping
            wait_until(lambda: rabbit_unacked(queue) == 0, what="the idle acks flushed")
        finally:
            host.stop(10)
        assert calls, "acks were sent"
        assert all(calls), "every ack was a multiple ack"
        assert len(calls) <= 400 // 25 + 5
        assert amqp_broker.depth(queue) == 0

    def test_per_message_acks_when_coalescing_is_off(self, amqp_broker, ack_calls):
        calls = ack_calls
        queue = unique_queue()
        amqp_broker.publish_many(queue, [{"n": n} for n in range(50)])
        seen = []
        host = make_host(amqp_broker)
        host.consumer("orders", queue=queue, ack_coalescing=False)(seen.append)
        host.start()
        try:
            wait_until(lambda: len(seen) == 50)
        finally:
            host.stop(10)
        assert calls == [False] * 50
