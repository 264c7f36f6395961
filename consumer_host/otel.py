"""OpenTelemetry tracing for consumers and producers (``pip install consumer-host[otel]``).

``Host(name, middleware=[TracingMiddleware()])`` gives every handled message one CONSUMER span,
``<queue> process``, with OpenTelemetry's messaging attributes, whose parent is the producer's
context read from the W3C ``traceparent``/``tracestate`` headers (on every broker, Celery task
messages included). Retry and dead-letter copies keep the producer's headers, so every attempt
joins the same trace. ``Host.publish`` and ``Publisher(url, middleware=[...])`` inject the
current context into what they send. Log lines written inside a span carry ``trace_id`` and
``span_id`` (bound into structlog's context, which the host's logging also puts on stdlib lines);
:func:`add_trace_context` and :class:`TraceContextFilter` do the same for logging set up by the
application.

This module is the only one that imports ``opentelemetry``; ``import consumer_host`` never does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from structlog.contextvars import bind_contextvars, reset_contextvars

from consumer_host._version import __version__
from consumer_host.consuming.handling import describe_error
from consumer_host.consuming.middleware import ConsumerInfo, Outcome
from consumer_host.message import Message

__all__ = ["TraceContextFilter", "TracingMiddleware", "add_trace_context"]

#: Attributes of our own, beside the messaging conventions.
ATTEMPT = "messaging.consumer_host.attempt"
CONSUMER = "messaging.consumer_host.consumer"
OUTCOME = "messaging.consumer_host.outcome"


class TracingMiddleware:
    """Traces each handled message and injects the trace context into published ones.

    ``tracer_provider``: default the global one (``opentelemetry.trace.set_tracer_provider``),
    looked up when each consumer starts.
    """

    name = "tracing"

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider

    def tracer(self) -> trace.Tracer:
        return trace.get_tracer("consumer_host", __version__, tracer_provider=self._provider)

    def for_consumer(self, consumer: ConsumerInfo) -> ConsumerTracing:
        return ConsumerTracing(self.tracer(), consumer)

    def before_publish(self, queue: str, headers: dict[str, Any]) -> None:
        """Put the current trace context (``traceparent``, ``tracestate``) into ``headers``."""
        propagate.inject(headers)


class ConsumerTracing:
    """:class:`TracingMiddleware` as one consumer uses it."""

    name = "tracing"

    def __init__(self, tracer: trace.Tracer, consumer: ConsumerInfo) -> None:
        self._tracer = tracer
        self._consumer = consumer

    def _attributes(self, message: Message) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": self._consumer.system,
            "messaging.destination.name": message.queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.body.size": len(message.raw),
            CONSUMER: self._consumer.name,
            ATTEMPT: message.attempt,
        }
        if message.message_id is not None:
            attributes["messaging.message.id"] = message.message_id
        routing_key = message.delivery_info.get("routing_key")
        if self._consumer.system == "rabbitmq" and isinstance(routing_key, str):
            attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
        return attributes

    @contextmanager
    def around(self, message: Message) -> Iterator[None]:
        parent = propagate.extract(_text_headers(message.headers))
        with self._tracer.start_as_current_span(
            f"{message.queue} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(message),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            tokens = bind_contextvars(**_ids(span.get_span_context()))
            try:
                yield
            finally:
                reset_contextvars(**tokens)

    def after(self, message: Message, outcome: Outcome) -> None:
        if outcome.kind == "rejected_bad_input":
            # Settled on the connection thread, with no handler and no span around it.
            parent = propagate.extract(_text_headers(message.headers))
            with self._tracer.start_as_current_span(
                f"{message.queue} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=self._attributes(message),
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                _record(span, outcome)
            return
        _record(trace.get_current_span(), outcome)


def _record(span: trace.Span, outcome: Outcome) -> None:
    span.set_attribute(OUTCOME, outcome.kind)
    error = outcome.error
    if error is None or outcome.kind == "deferred":
        return
    span.set_attribute("error.type", type(error).__qualname__)
    if isinstance(error, Exception):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, describe_error(error)[:200]))


def _text_headers(headers: dict[str, Any]) -> dict[str, str]:
    """The headers a propagator reads: text values only (AMQP may hand back bytes)."""
    carrier: dict[str, str] = {}
    for key in ("traceparent", "tracestate", "baggage"):
        value = headers.get(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            carrier[key] = value
    return carrier


def _ids(context: trace.SpanContext) -> dict[str, str]:
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, if any."""
    for key, value in _ids(trace.get_current_span().get_span_context()).items():
        event_dict.setdefault(key, value)
    return event_dict


class TraceContextFilter(logging.Filter):
    """stdlib logging filter: ``record.trace_id`` and ``record.span_id`` of the current span
    (empty strings outside one), for format strings such as ``%(trace_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _ids(trace.get_current_span().get_span_context())
        record.trace_id = ids.get("trace_id", "")
        record.span_id = ids.get("span_id", "")
        return True
