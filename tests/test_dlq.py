"""Dead-letter tooling: list, replay and purge on RabbitMQ, Redis lists and Redis Streams."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import amqp
import pytest
import redis
from kombu import Connection

from consumer_host.transports.broker import PLATFORM_VARIABLES
from consumer_host.transports.dead_letters import (
    DeadLetterMoveStopped,
    Selection,
    replay_headers,
    summarize,
)
from consumer_host.transports.kombu_dead_letters import KombuDeadLetters
from consumer_host.transports.redis_dead_letters import (
    RedisListDeadLetters,
    RedisStreamDeadLetters,
)
from consumer_host.transports.redis_streams import entry_fields

from .brokers import AMQP_URL, REDIS_URL, unique_queue
from .helpers import cli

APP = str(Path(__file__).parent / "apps" / "orders_app.py")


# -- helpers ---------------------------------------------------------------------------------------


def store_for(tool, queue):
    kind = {
        "amqp": KombuDeadLetters,
        "redis": RedisListDeadLetters,
        "streams": RedisStreamDeadLetters,
    }[tool.kind]
    return kind(tool.url, queue=queue, dead_letter=f"{queue}.dlq")


def dead_headers(queue, error_type, n, *, minute=0):
    """Headers as the consumer writes them when it dead-letters a message."""
    return {
        "x-error": f"{error_type}: order {n} failed",
        "x-error-type": error_type,
        "x-failed-at": f"2024-05-01T10:{minute:02d}:00+00:00",
        "x-original-queue": queue,
        "x-attempts": 4,
        "x-attempt": 4,
        "x-retry-at": 1714557600.0,
        "tenant": "acme",
    }


@pytest.fixture
def dead(real_broker):
    """A fresh queue with an (empty, existing) queue, and a way to fill its dead-letter queue."""
    queue = unique_queue("dlq")
    real_broker.depth(queue)  # declares the queue on RabbitMQ: replays are routed to it

    def fill(types):
        for n, error_type in enumerate(types):
            real_broker.publish(
                f"{queue}.dlq",
                {"n": n},
                headers=dead_headers(queue, error_type, n, minute=n),
                message_id=f"id-{n}",
            )

    return real_broker, queue, fill


def read_back(tool, queue):
    """Take every message off ``queue``, oldest first: (body, headers, message id) each."""
    out = []
    if tool.kind == "streams":
        client = redis.Redis.from_url(REDIS_URL)
        for _, fields in client.xrange(queue):
            message_id = fields.get(b"message_id")
            out.append(
                (
                    json.loads(fields[b"body"]),
                    json.loads(fields[b"headers"]),
                    message_id.decode() if message_id else None,
                )
            )
        client.delete(queue)
        return out
    if tool.kind == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        while (raw := client.rpop(queue)) is not None:
            envelope = json.loads(raw)
            body = base64.b64decode(envelope["body"])
            out.append(
                (json.loads(body), envelope["headers"], envelope["properties"].get("message_id"))
            )
        return out
    conn = Connection(AMQP_URL)
    try:
        channel = conn.channel()
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            out.append(
                (
                    json.loads(message.body),
                    dict(message.headers or {}),
                    message.properties.get("message_id"),
                )
            )
    finally:
        conn.release()
    return out


def bodies(messages):
    return [body["n"] for body, _, _ in messages]


# -- broker-independent pieces ---------------------------------------------------------------------


class TestPieces:
    def test_a_replayed_copy_starts_over_and_keeps_everything_else(self):
        headers = {**dead_headers("q", "KeyError", 1), "x-error-reason": "bad-json"}
        assert replay_headers(headers) == {"tenant": "acme"}

    def test_groups_count_and_span_their_failure_times_in_any_order(self):
        seen = [
            dead_headers("q", "KeyError", 1, minute=5),
            dead_headers("q", "ValueError", 2, minute=1),
            dead_headers("q", "KeyError", 3, minute=2),
            dead_headers("q", "KeyError", 4, minute=9),
            {"no": "error headers"},
        ]
        groups = [g.as_dict() for g in summarize("orders", seen)]
        assert groups == [
            {
                "consumer": "orders",
                "error_type": "KeyError",
                "count": 3,
                "first_failed_at": "2024-05-01T10:02:00+00:00",
                "last_failed_at": "2024-05-01T10:09:00+00:00",
                "sample_error": "KeyError: order 1 failed",
            },
            {
                "consumer": "orders",
                "error_type": "ValueError",
                "count": 1,
                "first_failed_at": "2024-05-01T10:01:00+00:00",
                "last_failed_at": "2024-05-01T10:01:00+00:00",
                "sample_error": "ValueError: order 2 failed",
            },
            {
                "consumer": "orders",
                "error_type": None,
                "count": 1,
                "first_failed_at": None,
                "last_failed_at": None,
                "sample_error": None,
            },
        ]

    def test_a_selection_takes_one_type_up_to_its_limit(self):
        selection = Selection(error_type="KeyError", limit=2)
        assert selection.matches({"x-error-type": "KeyError"})
        assert not selection.matches({"x-error-type": "ValueError"})
        assert not selection.matches({})
        assert not selection.exhausted(1)
        assert selection.exhausted(2)
        assert Selection().matches({})
        assert not Selection().exhausted(10**9)


# -- the stores on the real brokers ----------------------------------------------------------------


class TestList:
    def test_listing_twice_changes_nothing(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError", "KeyError", "ValueError", "OSError"])
        store = store_for(tool, queue)
        try:
            first = list(store.browse())
            second = list(store.browse())
        finally:
            store.close()
        assert first == second
        assert [h["x-error-type"] for h in first] == [
            "KeyError",
            "ValueError",
            "KeyError",
            "KeyError",
            "ValueError",
            "OSError",
        ]
        # Still there, in the order they were dead-lettered (RabbitMQ: basic.get, then the
        # closed channel gives them back to their original positions).
        assert bodies(read_back(tool, f"{queue}.dlq")) == [0, 1, 2, 3, 4, 5]

    def test_groups_by_error_type_with_counts_and_times(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError"])
        store = store_for(tool, queue)
        try:
            groups = {g.error_type: g for g in summarize("orders", store.browse())}
        finally:
            store.close()
        assert groups["KeyError"].count == 2
        assert groups["KeyError"].first_failed_at == "2024-05-01T10:00:00+00:00"
        assert groups["KeyError"].last_failed_at == "2024-05-01T10:02:00+00:00"
        assert groups["KeyError"].sample_error == "KeyError: order 0 failed"
        assert groups["ValueError"].count == 1

    def test_an_absent_dead_letter_queue_lists_empty(self, real_broker):
        store = store_for(real_broker, unique_queue("dlq-none"))
        try:
            assert list(store.browse()) == []
        finally:
            store.close()


class TestReplay:
    def test_replay_of_one_error_type_moves_those_and_leaves_the_others_in_order(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError", "ValueError", "KeyError"])
        store = store_for(tool, queue)
        try:
            moved = store.replay(Selection(error_type="KeyError"))
        finally:
            store.close()
        assert moved == 3
        replayed = read_back(tool, queue)
        assert bodies(replayed) == [0, 2, 4]
        for (body, headers, message_id), n in zip(replayed, [0, 2, 4], strict=True):
            assert headers == {"tenant": "acme"}  # no x-attempt, no x-error*, the rest kept
            assert message_id == f"id-{n}"
            assert body == {"n": n}
        left = read_back(tool, f"{queue}.dlq")
        assert bodies(left) == [1, 3]
        assert all(h["x-error-type"] == "ValueError" for _, h, _ in left)

    def test_replay_stops_at_the_limit_taking_the_oldest(self, dead):
        tool, queue, fill = dead
        fill(["KeyError"] * 5)
        store = store_for(tool, queue)
        try:
            assert store.replay(Selection(limit=2)) == 2
        finally:
            store.close()
        assert bodies(read_back(tool, queue)) == [0, 1]
        assert bodies(read_back(tool, f"{queue}.dlq")) == [2, 3, 4]

    def test_amqp_an_unroutable_copy_stops_the_replay_and_the_dead_letter_stays(self, amqp_broker):
        queue = unique_queue("dlq-noroute")
        amqp_broker.publish(
            f"{queue}.dlq", {"n": 0}, headers=dead_headers(queue, "KeyError", 0)
        )  # the consumer's queue itself was never declared: mandatory gets it returned
        store = store_for(amqp_broker, queue)
        try:
            with pytest.raises(DeadLetterMoveStopped) as stopped:
                store.replay(Selection())
        finally:
            store.close()
        assert stopped.value.done == 0
        assert "does the queue exist" in str(stopped.value)
        assert bodies(read_back(amqp_broker, f"{queue}.dlq")) == [0]


class TestPurge:
    def test_purge_deletes_only_the_matching(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError", "OSError"])
        store = store_for(tool, queue)
        try:
            assert store.purge(Selection(error_type="KeyError")) == 2
        finally:
            store.close()
        assert bodies(read_back(tool, f"{queue}.dlq")) == [1, 3]
        assert read_back(tool, queue) == []


class TestScale:
    def test_ten_thousand_dead_letters_list_in_a_few_seconds(self, real_broker):
        queue = unique_queue("dlq-scale")
        dlq = f"{queue}.dlq"
        fill_many(real_broker, dlq, 10_000)
        store = store_for(real_broker, queue)
        began = time.monotonic()
        try:
            groups = summarize("orders", store.browse())
        finally:
            store.close()
        took = time.monotonic() - began
        assert sorted(g.count for g in groups) == [3333, 3333, 3334]
        assert took < 8, f"listing 10,000 dead letters took {took:.1f}s"


def fill_many(tool, dlq, count):
    """Dead letters in bulk, without waiting for a confirm per message."""
    tool.queues.add(dlq)
    headers = [dead_headers("q", f"E{n % 3}", n) for n in range(3)]
    if tool.kind == "amqp":
        conn = Connection(AMQP_URL)
        try:
            channel = conn.channel()
            channel.queue_declare(dlq, durable=True, auto_delete=False)
            for n in range(count):
                channel.basic_publish(
                    amqp.Message(b'{"n": %d}' % n, application_headers=headers[n % 3]),
                    exchange="",
                    routing_key=dlq,
                )
            channel.queue_declare(dlq, passive=True)  # a round trip: every publish has landed
        finally:
            conn.release()
        return
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        if tool.kind == "streams":
            body = json.dumps({"n": n}).encode()
            pipe.xadd(dlq, entry_fields(body, "application/json", "utf-8", headers[n % 3], None))
        else:
            envelope = {
                "body": base64.b64encode(b'{"n": %d}' % n).decode(),
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": headers[n % 3],
                "properties": {"body_encoding": "base64"},
            }
            pipe.lpush(dlq, json.dumps(envelope))
    pipe.execute()


# -- the real command ------------------------------------------------------------------------------


def run_dlq(tool, queue, *args):
    return cli(
        "dlq",
        *args,
        APP,
        "--broker",
        tool.url,
        env={"ORDERS_QUEUE": queue, "ORDERS_LOG": os.devnull},
    )


class TestCommand:
    def test_list_json(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError"])
        result = run_dlq(tool, queue, "list", "--json")
        assert result.returncode == 0, result.stderr
        rows = {row["error_type"]: row for row in json.loads(result.stdout)}
        assert rows["KeyError"]["consumer"] == "orders"
        assert rows["KeyError"]["count"] == 2
        assert rows["KeyError"]["first_failed_at"] == "2024-05-01T10:00:00+00:00"
        assert rows["KeyError"]["last_failed_at"] == "2024-05-01T10:02:00+00:00"
        assert rows["KeyError"]["sample_error"] == "KeyError: order 0 failed"
        assert rows["ValueError"]["count"] == 1
        table = run_dlq(tool, queue, "list", "--consumer", "orders")
        assert table.returncode == 0, table.stderr
        assert "KeyError" in table.stdout
        assert "ValueError" in table.stdout
        assert bodies(read_back(tool, f"{queue}.dlq")) == [0, 1, 2]

    def test_replay(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError"])
        result = run_dlq(
            tool, queue, "replay", "--consumer", "orders", "--error-type", "ValueError"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("replayed 1 dead letter(s)")
        [(body, headers, _)] = read_back(tool, queue)
        assert body == {"n": 1}
        assert "x-attempt" not in headers
        assert bodies(read_back(tool, f"{queue}.dlq")) == [0, 2]

    def test_purge_without_yes_refuses_and_deletes_nothing(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError"])
        result = run_dlq(tool, queue, "purge", "--consumer", "orders")
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "--yes" in line
        assert bodies(read_back(tool, f"{queue}.dlq")) == [0, 1]

    def test_purge_with_yes(self, dead):
        tool, queue, fill = dead
        fill(["KeyError", "ValueError", "KeyError"])
        result = run_dlq(
            tool, queue, "purge", "--consumer", "orders", "--error-type", "KeyError", "--yes"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("purged 2 dead letter(s)")
        assert bodies(read_back(tool, f"{queue}.dlq")) == [1]

    def test_an_unknown_consumer_is_one_line_naming_the_known_ones(self):
        result = cli(
            "dlq",
            "replay",
            APP,
            "--consumer",
            "ordrs",
            "--broker",
            REDIS_URL,
            env={"ORDERS_LOG": os.devnull},
        )
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "no consumer named 'ordrs'" in line
        assert "consumers: orders" in line

    @pytest.mark.parametrize(
        "url", ["amqp://user:SECRET123@127.0.0.1:1//", "redis://:SECRET123@127.0.0.1:1/0"]
    )
    @pytest.mark.parametrize("command", [["list"], ["replay", "--consumer", "orders"]])
    def test_an_unreachable_broker_is_one_line_and_exit_1_without_the_password(self, url, command):
        result = cli("dlq", *command, APP, "--broker", url, env={"ORDERS_LOG": os.devnull})
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("consumer-host: error: ")
        assert "SECRET123" not in result.stderr + result.stdout
        assert "***" in line

    def test_the_embedded_broker_has_dead_letters_too(self, tmp_path):
        no_broker = {name: "" for name in (*PLATFORM_VARIABLES, "CONSUMER_HOST_BROKER_URL")}
        env = {"ORDERS_LOG": os.devnull, **no_broker, "CONSUMER_HOST_DATA_DIR": str(tmp_path)}
        result = cli("dlq", "list", APP, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "no dead letters"

    def test_the_in_process_broker_is_refused_in_one_line(self, tmp_path):
        env = {"ORDERS_LOG": os.devnull, "CONSUMER_HOST_BROKER_URL": "memory://"}
        result = cli("dlq", "list", APP, cwd=tmp_path, env=env)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "dlq works on RabbitMQ, Redis and the embedded broker" in line
