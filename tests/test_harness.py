"""consumer_host.testing.Harness: users' handlers driven without a broker, through the real
decode, middleware and settlement code, one message at a time on the test's thread."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from consumer_host import Defer, Host, Message, Reject
from consumer_host.testing import FakeClock, Harness


@pytest.fixture
def host() -> Host:
    return Host("shop")


def test_a_handler_that_returns_acks_and_sees_the_decoded_message(host, consumer_harness):
    got: list[Message] = []
    host.consumer("orders", queue="orders")(got.append)
    settled = consumer_harness(host).send(
        "orders", {"id": 7}, headers={"tenant": "a"}, message_id="m-1"
    )
    assert settled.outcome == "acked"
    assert settled.queue == "orders"
    [message] = got
    assert (message.body, message.headers, message.message_id) == (
        {"id": 7},
        {"tenant": "a"},
        "m-1",
    )
    assert (message.attempt, message.queue, message.raw) == (1, "orders", b'{"id": 7}')


def test_a_failure_is_retried_with_the_next_attempt_and_backoff_then_dead_lettered(host):
    clock = FakeClock(100.0)

    @host.consumer("orders", queue="orders", max_retries=2, retry_backoff_min=0.5)
    def handle(message):
        raise ValueError(f"cannot ship order {message.body['id']}")

    harness = Harness(host, clock=clock)
    first = harness.send("orders", {"id": 3}, headers={"trace": "x"})
    assert (first.outcome, first.attempt, first.delay) == ("retried", 1, 0.5)
    assert first.headers == {"trace": "x", "x-attempt": 2}
    second = harness.redeliver(first)
    assert (second.outcome, second.attempt, second.delay) == ("retried", 2, 1.0)
    last = harness.redeliver(second)
    assert (last.outcome, last.attempt, last.queue) == ("dead_lettered", 3, "orders.dlq")
    assert last.headers == {
        "trace": "x",
        "x-attempt": 3,
        "x-error": "cannot ship order 3",
        "x-error-type": "ValueError",
        "x-failed-at": datetime.fromtimestamp(clock.wall(), UTC).isoformat(),
        "x-original-queue": "orders",
        "x-attempts": 3,
    }
    assert isinstance(last.error, ValueError)
    with pytest.raises(ValueError, match="does not come back"):
        harness.redeliver(last)
    assert [s.outcome for s in harness.settled] == ["retried", "retried", "dead_lettered"]


def test_reject_dead_letters_at_once(host):
    @host.consumer("orders", queue="orders", dead_letter="orders.bad")
    def handle(message):
        raise Reject("unknown customer")

    settled = Harness(host).send("orders", {})
    assert (settled.outcome, settled.queue) == ("dead_lettered", "orders.bad")
    assert settled.headers["x-error-type"] == "Reject"
    assert settled.headers["x-error"] == "unknown customer"


def test_defer_comes_back_later_without_counting_an_attempt(host):
    @host.consumer("orders", queue="orders")
    def handle(message):
        raise Defer(2.0)

    settled = Harness(host).send("orders", {})
    assert (settled.outcome, settled.delay) == ("deferred", 1.6)
    assert "x-attempt" not in settled.headers


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        (b"{oops", "application/json", "invalid_json"),
        (b"x", "text/plain", "content_type_not_accepted"),
    ],
)
def test_bad_input_is_rejected_with_the_reason_a_dead_letter_carries(
    host, raw, content_type, reason
):
    called = []
    host.consumer("orders", queue="orders")(called.append)
    settled = Harness(host).send("orders", raw=raw, content_type=content_type)
    assert settled.outcome == "rejected_bad_input"
    assert settled.headers["x-error-reason"] == reason
    assert settled.message is None
    assert settled.error.reason == reason
    assert called == []


def test_async_handlers_run_to_their_outcome(host):
    @host.consumer("orders", queue="orders", max_retries=0)
    async def handle(message):
        await asyncio.sleep(0)
        if message.body == "fail":
            raise RuntimeError("async failure")

    harness = Harness(host)
    assert harness.send("orders", "ok").outcome == "acked"
    assert harness.send("orders", "fail").outcome == "dead_lettered"


async def _inside_a_loop(harness: Harness) -> str:
    settled = await harness.send_async("orders", "ok", headers={"h": 1})
    return settled.outcome


def test_send_async_runs_in_the_tests_own_event_loop(host):
    @host.consumer("orders", queue="orders")
    async def handle(message):
        assert message.headers == {"h": 1}

    assert asyncio.run(_inside_a_loop(Harness(host))) == "acked"


def test_partition_by_gives_each_message_its_key(host):
    host.consumer("orders", queue="orders", partition_by=lambda m: m.body["customer"])(
        lambda message: None
    )
    assert Harness(host).send("orders", {"customer": "c-9"}).key == "c-9"


def test_a_consumer_is_found_by_its_queue_too_and_unknown_names_are_refused(host):
    host.consumer("orders", queue="orders.v2")(lambda message: None)
    harness = Harness(host)
    assert harness.send("orders.v2", {}).outcome == "acked"
    with pytest.raises(Exception, match="no consumer named or consuming 'nope'"):
        harness.send("nope", {})


def test_messages_a_handler_publishes_are_recorded_with_middleware_headers(host):
    class Stamp:
        def before_publish(self, queue, headers):
            headers["stamped"] = queue

    host.add_middleware(Stamp())

    @host.consumer("orders", queue="orders")
    def handle(message):
        host.publish("invoices", {"order": message.body["id"]}, message_id="inv-1")

    harness = Harness(host)
    harness.send("orders", {"id": 5})
    assert harness.published == [
        {
            "queue": "invoices",
            "body": {"order": 5},
            "headers": {"stamped": "invoices"},
            "message_id": "inv-1",
        }
    ]


class TestCeleryTasks:
    def test_a_task_runs_with_its_args_and_kwargs(self, host):
        calls = []

        @host.celery_task("tasks.add", queue="math")
        def add(x, y, *, scale=1):
            calls.append((x + y) * scale)

        settled = Harness(host).send_task("tasks.add", 2, 3, queue="math", kwargs={"scale": 10})
        assert settled.outcome == "acked"
        assert calls == [50]

    def test_an_unknown_task_is_dead_lettered(self, host):
        host.celery_task("tasks.add")(lambda x, y: x + y)
        settled = Harness(host).send_task("tasks.sub", 1, 2)
        assert settled.outcome == "dead_lettered"
        assert "unknown task 'tasks.sub'" in settled.headers["x-error"]

    def test_a_task_with_an_eta_is_deferred_and_a_bound_task_sees_its_context(self, host):
        contexts = []

        @host.celery_task("tasks.later", bind=True)
        def later(task):
            contexts.append(task)

        harness = Harness(host)
        soon = datetime.now(UTC) + timedelta(hours=1)
        assert harness.send_task("tasks.later", eta=soon).outcome == "deferred"
        settled = harness.send_task("tasks.later", task_id="t-1", retries=2)
        assert settled.outcome == "acked"
        [context] = contexts
        assert (context.id, context.name, context.retries) == ("t-1", "tasks.later", 2)


def test_the_readme_example_runs_as_written(consumer_harness, monkeypatch):
    """README's "Testing your consumers" block, executed against an app it describes."""
    import re
    import sys
    import types
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Testing your consumers")[1]
    [block] = re.findall(r"```python\n(.*?)```", section.split("\n## ")[0], re.S)

    class OutOfStock(Exception):
        pass

    host = Host("shop")

    @host.consumer("orders", queue="orders")
    def handle(message):
        raise OutOfStock(f"order {message.body['id']}")

    host.celery_task("orders.ship", queue="celery")(lambda order_id: None)
    shop, app = types.ModuleType("shop"), types.ModuleType("shop.app")
    app.host = host
    monkeypatch.setitem(sys.modules, "shop", shop)
    monkeypatch.setitem(sys.modules, "shop.app", app)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    [test] = [f for name, f in namespace.items() if name.startswith("test_")]
    test(consumer_harness)


def test_the_host_gets_its_own_publish_back_when_the_harness_closes(host):
    own = host.publisher
    with Harness(host) as harness:
        assert host.publisher is not own
        host.publish("q", {"n": 1})
        assert len(harness.published) == 1
    assert host.publisher is own
