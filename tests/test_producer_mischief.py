"""What a producer (or a handler) can send that must not fool the host: a forged delivery count,
a content encoding that is not a text encoding, names RabbitMQ cannot carry, a deferral to no
time at all. Found by a hostile test run; each is the message's or the user's mistake, said as
such, and loses nothing."""

from __future__ import annotations

import json
import math
import textwrap
from types import SimpleNamespace

import pytest
import redis

from consumer_host import Defer, Host
from consumer_host.consuming.decoding import BadMessage, decode
from consumer_host.errors import ConfigError
from consumer_host.message import Delivery
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.broker import BrokerChoice
from consumer_host.transports.kombu_copies import check_amqp_names
from consumer_host.transports.kombu_deliveries import from_amqp

from .brokers import broker_tool, unique_queue
from .helpers import cli, wait_until

JSON = frozenset({"application/json"})


def json_delivery(body: bytes, encoding: str | None) -> Delivery:
    return Delivery(
        body=body,
        content_type="application/json",
        content_encoding=encoding,
        headers={},
        properties={},
        delivery_info={},
    )


# -- content encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "utf-8", "UTF-8", "utf8", "binary"])
def test_utf8_and_unsaid_encodings_read_as_utf8(encoding):
    assert decode(json_delivery('{"ü": 1}'.encode(), encoding), JSON, 1 << 20) == {"ü": 1}


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_json_body_in_another_text_encoding_is_read_in_it(encoding):
    assert decode(json_delivery('{"é": 2}'.encode(encoding), encoding), JSON, 1 << 20) == {"é": 2}


@pytest.mark.parametrize("encoding", ["gzip", "base64", "x-nope", "zlib_codec"])
def test_an_encoding_that_is_not_a_text_encoding_is_bad_input(encoding):
    with pytest.raises(BadMessage) as bad:
        decode(json_delivery(b'{"n": 1}', encoding), JSON, 1 << 20)
    assert bad.value.reason == "unknown_content_encoding"


def test_bytes_that_are_not_in_the_said_encoding_are_bad_input():
    with pytest.raises(BadMessage) as bad:
        decode(json_delivery(b'{"n": 1}\xff', "ascii"), JSON, 1 << 20)
    assert bad.value.reason == "invalid_encoding"


def _xadd(url: str, queue: str, body: bytes, encoding: str) -> None:
    client = redis.Redis.from_url(url.replace("+streams", ""))
    client.xadd(
        queue,
        {"body": body, "content-type": "application/json", "content-encoding": encoding},
    )


@pytest.fixture(params=["amqp", "streams"])
def text_broker(request):
    """The brokers whose messages carry a content encoding beside raw bytes (lists refuse an
    unknown one while unwrapping kombu's envelope: tests/test_consumer.py)."""
    yield from broker_tool(request.param)


def test_an_unknown_content_encoding_is_dead_lettered_and_the_next_message_handled(text_broker):
    queue = unique_queue()
    if text_broker.kind == "streams":
        _xadd(text_broker.url, queue, b'{"n": 1}', "gzip")
    else:
        text_broker.publish_raw(queue, b'{"n": 1}', "application/json", content_encoding="gzip")
    text_broker.publish(queue, {"n": 2})
    handled: list[int] = []
    host = Host("shop")
    host.use_broker(BrokerChoice(text_broker.url, "test"))
    host.consumer("orders", queue=queue)(lambda message: handled.append(message.body["n"]))
    host.start()
    try:
        wait_until(lambda: handled == [2], what="the good message handled")
        wait_until(lambda: text_broker.depth(f"{queue}.dlq") == 1, what="the bad one dead-lettered")
    finally:
        host.stop(10)
    dead = text_broker.drain(f"{queue}.dlq")
    assert "unknown_content_encoding" in json.dumps(dead[0][1])


# -- a forged delivery count ---------------------------------------------------------------------


def amqp_message(headers: dict, redelivered: bool) -> SimpleNamespace:
    return SimpleNamespace(
        properties={"application_headers": headers, "content_type": "application/json"},
        delivery_info={"delivery_tag": 7, "redelivered": redelivered},
        body=b'{"n": 1}',
    )


def test_a_first_delivery_ignores_a_delivery_count_the_producer_wrote():
    assert (
        from_amqp(amqp_message({"x-delivery-count": 99}, redelivered=False)).delivery_count is None
    )


def test_a_redelivery_reads_the_brokers_delivery_count():
    assert from_amqp(amqp_message({"x-delivery-count": 2}, redelivered=True)).delivery_count == 3


def test_a_forged_delivery_count_on_a_classic_queue_does_not_dead_letter_the_message(amqp_broker):
    queue = unique_queue()
    amqp_broker.publish(queue, {"n": 1}, headers={"x-delivery-count": 99})
    handled: list[int] = []
    host = Host("shop")
    host.use_broker(BrokerChoice(amqp_broker.url, "test"))
    host.consumer("orders", queue=queue)(lambda message: handled.append(message.body["n"]))
    host.start()
    try:
        wait_until(lambda: handled == [1], what="the message handled")
    finally:
        host.stop(10)
    assert amqp_broker.depth(f"{queue}.dlq") == 0


# -- names RabbitMQ cannot carry -----------------------------------------------------------------


def spec(queue: str, dead_letter: str | None = None) -> QueueSpec:
    return QueueSpec(queue=queue, dead_letter=dead_letter or f"{queue}.dlq")


def test_a_queue_name_with_room_for_its_retry_queues_is_accepted():
    check_amqp_names(spec("q" * 238))


def test_a_queue_name_whose_retry_queues_would_not_fit_is_refused():
    with pytest.raises(ConfigError, match="239 bytes is too long for RabbitMQ: at most 238"):
        check_amqp_names(spec("q" * 239))


def test_names_are_counted_in_bytes():
    with pytest.raises(ConfigError):
        check_amqp_names(spec("é" * 120))  # 240 bytes


def test_a_dead_letter_queue_name_over_255_bytes_is_refused():
    with pytest.raises(ConfigError, match="dead-letter queue name of 256 bytes"):
        check_amqp_names(spec("orders", "d" * 256))


def test_run_refuses_a_queue_name_too_long_for_rabbitmq_in_one_line(tmp_path, amqp_broker):
    app = tmp_path / "long_app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            from consumer_host import Host
            host = Host("shop")
            host.consumer("orders", queue={"q" * 245!r})(lambda message: None)
            """
        )
    )
    result = cli("run", str(app), "--broker", amqp_broker.url, "--health-port", "0", timeout=30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("consumer-host: error: "), result.stderr
    assert "too long for RabbitMQ" in last


def test_publish_refuses_a_queue_name_too_long_for_rabbitmq_in_one_line(amqp_broker):
    result = cli("publish", "q" * 300, json.dumps({"n": 1}), "--broker", amqp_broker.url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "too long for RabbitMQ" in result.stderr


# -- deferrals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -math.inf])
def test_a_deferral_to_no_time_at_all_is_a_mistake(seconds):
    with pytest.raises(ValueError, match="finite"):
        Defer(seconds)


def test_a_deferral_to_a_time_past_is_due_now():
    assert Defer(-5).seconds == 0.0
