"""A traced app: every message's span continues the producer's trace (OpenTelemetry).

    pip install 'consumer-host[otel]' opentelemetry-sdk
    consumer-host run examples/traced.py --broker amqp://guest:guest@localhost:5672//

A producer worker publishes a checkout a second inside a span of its own; the "checkouts"
consumer handles it in a CONSUMER span whose parent is that producer span (read from the
message's ``traceparent`` header) and publishes an invoice, which the "invoices" consumer handles
in the same trace. Spans print to stdout (swap ``ConsoleSpanExporter`` for an OTLP exporter to
see them in Jaeger or Tempo); log lines inside a span carry its ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import itertools
import threading

import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from consumer_host import Host, Message
from consumer_host.otel import TracingMiddleware

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
trace.set_tracer_provider(provider)

host = Host("traced-shop", middleware=[TracingMiddleware()])
log = structlog.get_logger("shop")
tracer = trace.get_tracer("shop")


@host.consumer("checkouts", queue="checkouts", max_retries=1, retry_backoff_min=0.5)
def checkout(message: Message) -> None:
    log.info("checkout", order=message.body["order"], attempt=message.attempt)
    host.publish("invoices", {"order": message.body["order"]})  # the trace goes on


@host.consumer("invoices", queue="invoices")
def invoice(message: Message) -> None:
    log.info("invoice", order=message.body["order"])


@host.worker("producer")
def produce(stop: threading.Event) -> None:
    """A stand-in for the web app that starts each trace."""
    for number in itertools.count(1):
        if stop.wait(1.0):
            return
        with tracer.start_as_current_span("POST /checkout", kind=trace.SpanKind.PRODUCER):
            host.publish("checkouts", {"order": number})
