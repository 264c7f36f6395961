"""Tracing on the real brokers, recorded by the OpenTelemetry SDK's in-memory exporter: one
CONSUMER span per handled message, its parent the producer's context from ``traceparent``,
the messaging attributes and the outcome, every retry in the same trace, dead letters carrying
the context on, and log lines inside the span carrying its ids."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from celery import Celery
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from structlog.contextvars import get_contextvars

from consumer_host import Host, Publisher
from consumer_host.otel import TraceContextFilter, TracingMiddleware, add_trace_context
from consumer_host.testing import Harness
from consumer_host.transports.broker import BrokerChoice

from .brokers import AMQP_URL, REDIS_URL, broker_tool, unique_queue
from .helpers import wait_until

SYSTEMS = {"amqp": "rabbitmq", "redis": "redis", "streams": "redis"}
FAST = {"retry_backoff_min": 0.01, "retry_backoff_max": 0.02}


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _consumer_spans(exporter, queue):
    return [s for s in exporter.get_finished_spans() if s.name == f"{queue} process"]


def _host(url, tracing):
    host = Host("traced", middleware=[tracing])
    host.use_broker(BrokerChoice(url, "test"))
    return host


def test_a_consumer_span_continues_the_producers_trace_with_messaging_attributes(
    real_broker, spans
):
    provider, exporter = spans
    tracing = TracingMiddleware(tracer_provider=provider)
    queue = unique_queue("traced")
    real_broker.queues.add(queue)
    seen = []
    log_records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            log_records.append(record)

    logger = logging.getLogger(f"test.otel.{queue}")
    keep = Keep()
    keep.addFilter(TraceContextFilter())
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)

    host = _host(real_broker.url, tracing)

    @host.consumer("orders", queue=queue, **FAST)
    def handle(message):
        seen.append(
            (
                message.attempt,
                dict(get_contextvars()),
                add_trace_context(None, "info", {}),
                message.headers.get("traceparent"),
            )
        )
        logger.info("handling %s", message.attempt)
        if message.attempt == 1:
            raise ValueError("first attempt fails")

    tracer = provider.get_tracer("producer")
    with (
        tracer.start_as_current_span("checkout", kind=SpanKind.PRODUCER) as producer_span,
        Publisher(real_broker.url, middleware=[tracing]) as publisher,
    ):
        message_id = publisher.publish(queue, {"order": 1})
    producer = producer_span.get_span_context()

    host.start()
    try:
        wait_until(lambda: len(_consumer_spans(exporter, queue)) == 2, what="two consumer spans")
    finally:
        host.stop(10)

    first, second = sorted(_consumer_spans(exporter, queue), key=lambda s: s.start_time)
    for span in (first, second):
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == producer.trace_id
        assert span.parent.span_id == producer.span_id, "parent read from traceparent"
        assert span.attributes["messaging.system"] == SYSTEMS[real_broker.kind]
        assert span.attributes["messaging.destination.name"] == queue
        assert span.attributes["messaging.message.id"] == message_id
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.consumer_host.consumer"] == "orders"
        if real_broker.kind == "amqp":
            assert span.attributes["messaging.rabbitmq.destination.routing_key"] == queue
    assert first.attributes["messaging.consumer_host.attempt"] == 1
    assert first.attributes["messaging.consumer_host.outcome"] == "retried"
    assert first.status.status_code is StatusCode.ERROR
    [event] = [e for e in first.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "first attempt fails"
    assert second.attributes["messaging.consumer_host.attempt"] == 2
    assert second.attributes["messaging.consumer_host.outcome"] == "acked"
    assert second.status.status_code is StatusCode.UNSET

    # The retry copy carried the producer's context on; log lines carried the span's ids.
    assert seen[0][3] == seen[1][3] is not None
    for (_, context, processed, _), span, record in zip(
        seen, (first, second), log_records, strict=True
    ):
        ids = {
            "trace_id": trace.format_trace_id(span.context.trace_id),
            "span_id": trace.format_span_id(span.context.span_id),
        }
        assert {k: context[k] for k in ids} == ids
        assert processed == ids
        assert (record.trace_id, record.span_id) == (ids["trace_id"], ids["span_id"])


def test_a_dead_letter_carries_the_trace_context_on(real_broker, spans):
    provider, exporter = spans
    tracing = TracingMiddleware(tracer_provider=provider)
    queue = unique_queue("traced")
    real_broker.queues.update({queue, f"{queue}.dlq"})
    host = _host(real_broker.url, tracing)

    @host.consumer("orders", queue=queue, max_retries=0)
    def handle(message):
        raise RuntimeError("always fails")

    tracer = provider.get_tracer("producer")
    with (
        tracer.start_as_current_span("checkout") as producer_span,
        Publisher(real_broker.url, middleware=[tracing]) as publisher,
    ):
        publisher.publish(queue, {"order": 2})
    host.start()
    try:
        wait_until(lambda: real_broker.depth(f"{queue}.dlq") == 1, what="a dead letter")
    finally:
        host.stop(10)
    [(_, headers, _)] = real_broker.drain(f"{queue}.dlq")
    trace_id = trace.format_trace_id(producer_span.get_span_context().trace_id)
    assert headers["traceparent"].split("-")[1] == trace_id
    [span] = _consumer_spans(exporter, queue)
    assert span.attributes["messaging.consumer_host.outcome"] == "dead_lettered"


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_celery_task_messages_continue_the_callers_trace(kind, spans):
    provider, exporter = spans
    tool = next(broker_tool(kind))
    url = AMQP_URL if kind == "amqp" else REDIS_URL
    queue = unique_queue("celery-traced")
    tool.queues.add(queue)
    client = Celery("producers", broker=url)
    client.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    host = _host(url, TracingMiddleware(tracer_provider=provider))
    done = threading.Event()

    @host.celery_task("orders.ship", queue=queue)
    def ship(order_id):
        done.set()

    tracer = provider.get_tracer("caller")
    with tracer.start_as_current_span("caller") as caller:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        client.send_task("orders.ship", args=[1], queue=queue, headers=carrier)
    host.start()
    try:
        assert done.wait(20)
        wait_until(lambda: _consumer_spans(exporter, queue), what="the task's span")
    finally:
        host.stop(10)
        client.close()
        tool.close()
    [span] = _consumer_spans(exporter, queue)
    assert span.parent.span_id == caller.get_span_context().span_id
    assert span.attributes["messaging.system"] == SYSTEMS[kind]


def test_bad_input_gets_a_span_too(spans):
    provider, exporter = spans
    host = Host("traced", middleware=[TracingMiddleware(tracer_provider=provider)])
    host.consumer("orders", queue="orders")(lambda message: None)
    Harness(host).send("orders", raw=b"{broken")
    [span] = _consumer_spans(exporter, "orders")
    assert span.attributes["messaging.consumer_host.outcome"] == "rejected_bad_input"
    assert span.status.status_code is StatusCode.ERROR


def test_host_publish_injects_the_current_context(spans):
    provider, _ = spans
    host = Host("traced", middleware=[TracingMiddleware(tracer_provider=provider)])
    host.consumer("orders", queue="orders")(
        lambda message: host.publish("next", {"from": message.body})
    )
    harness = Harness(host)
    harness.send("orders", 1)
    [published] = harness.published
    assert published["headers"]["traceparent"].startswith("00-")


def test_importing_consumer_host_never_imports_opentelemetry():
    code = (
        "import sys, consumer_host, consumer_host.testing, consumer_host.cli;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_traced_example_continues_the_trace_into_what_it_publishes(tmp_path):
    """examples/traced.py, its handlers driven by the harness in a process of its own (it sets
    the global tracer provider): the invoice it publishes carries the checkout's trace."""
    example = Path(__file__).parent.parent / "examples" / "traced.py"
    code = f"""
import json, runpy
from opentelemetry import propagate, trace
from consumer_host.testing import Harness
app = runpy.run_path({str(example)!r})
harness = Harness(app["host"])
with trace.get_tracer("test").start_as_current_span("web") as web:
    headers = {{}}
    propagate.inject(headers)
settled = harness.send("checkouts", {{"order": 1}}, headers=headers)
[invoice] = harness.published
print(json.dumps({{
    "outcome": settled.outcome,
    "web": trace.format_trace_id(web.get_span_context().trace_id),
    "invoice": invoice["headers"]["traceparent"].split("-")[1],
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    *spans, last = result.stdout.strip().splitlines()
    summary = json.loads(last)
    assert summary["outcome"] == "acked"
    assert summary["invoice"] == summary["web"]
    assert '"name": "checkouts process"' in "\n".join(spans)
