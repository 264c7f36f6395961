"""structlog configuration for programs, and the listener that turns events into log lines.

The library itself only asks for loggers; :func:`configure_logging` is called by the CLI and by
:meth:`Host.run` when the host is the program, never when consumer-host is used as a library.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

from consumer_host.errors import Permanent
from consumer_host.redaction import redact_event, redact_text
from consumer_host.supervision.events import (
    BreakerChanged,
    ConsumerConnected,
    ConsumerDisconnected,
    Event,
    HostStarted,
    HostStopped,
    HostStopping,
    WorkerBackingOff,
    WorkerCrashed,
    WorkerFinished,
    WorkerStarted,
    WorkerTripped,
)

LOG_FORMATS = ("auto", "json", "console")


def configure_logging(
    fmt: str = "auto",
    level: str | int = "info",
    stream: TextIO | None = None,
    *,
    host: str | None = None,
) -> None:
    """JSON lines when ``stream`` is not a terminal (or ``fmt="json"``), readable text otherwise.

    kombu's, amqp's and redis' stdlib loggers go through the same pipeline, at WARNING and above.
    Tracebacks never include local variables (a frame's locals can hold the broker URL) and every
    URL password is masked.
    """
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    numeric_level = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if host is not None:
        shared.append(_default_key("host", host))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        final += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_event,
            structlog.processors.JSONRenderer(),
        ]
    else:
        final += [
            structlog.processors.format_exc_info,
            redact_event,
            structlog.dev.ConsoleRenderer(
                colors=stream.isatty() and "NO_COLOR" not in os.environ,
                exception_formatter=structlog.dev.plain_traceback,
            ),
        ]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in ("kombu", "amqp", "redis"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def _default_key(key: str, value: Any) -> Any:
    """A processor that gives every line (kombu's and amqp's too) ``key`` unless it has one."""

    def add(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault(key, value)
        return event_dict

    return add


class EventLogger:
    """Turns events into one structured log line each, with ``host`` and ``worker`` keys."""

    def __init__(self, host: str) -> None:
        self._host = host

    def __call__(self, event: Event) -> None:  # noqa: PLR0912 - one branch per event kind
        # Bound per event, not once: the host is often built before logging is configured.
        log = structlog.get_logger("consumer_host").bind(host=self._host)
        match event:
            case WorkerStarted(instance=instance, attempt=attempt):
                log.info("worker_started", instance=instance, worker=event.worker, attempt=attempt)
            case WorkerCrashed(instance=instance, error=error, failures=failures, ran_for=ran):
                log.error(
                    "worker_crashed",
                    instance=instance,
                    worker=event.worker,
                    failures=failures,
                    ran_for=round(ran, 3),
                    exc_info=error,
                )
            case WorkerBackingOff(instance=instance, delay=delay, failures=failures):
                log.warning(
                    "worker_restarting",
                    instance=instance,
                    worker=event.worker,
                    delay=round(delay, 3),
                )
            case WorkerTripped(instance=instance, error=Permanent() as error):
                # Retrying cannot help: the cause is the whole story, a traceback adds noise.
                log.error(
                    "worker_tripped",
                    instance=instance,
                    worker=event.worker,
                    reason="permanent error, not restarted",
                    critical=event.critical,
                    error=redact_text(f"{type(error).__name__}: {error}"),
                )
            case WorkerTripped(instance=instance, error=error, failures=failures, window=window):
                log.error(
                    "worker_tripped",
                    instance=instance,
                    worker=event.worker,
                    reason=f"failed {failures} times within {window:g}s",
                    failures=failures,
                    window=window,
                    critical=event.critical,
                    error=redact_text(f"{type(error).__name__}: {error}"),
                )
            case WorkerFinished(instance=instance, state=state):
                log.info("worker_stopped", instance=instance, worker=event.worker, state=state)
            case ConsumerConnected(instance=instance, queue=queue, broker=broker):
                name = "consumer_reconnected" if event.reconnect else "consumer_connected"
                node = {"node": event.node} if event.node else {}
                log.info(
                    name, instance=instance, worker=event.worker, queue=queue, broker=broker, **node
                )
            case ConsumerDisconnected(instance=instance, queue=queue, error=error, delay=delay):
                log.warning(
                    "consumer_disconnected",
                    instance=instance,
                    worker=event.worker,
                    queue=queue,
                    broker=event.broker,
                    error=error,
                    retry_in=round(delay, 3),
                    **({"node": event.node} if event.node else {}),
                )
            case BreakerChanged(breaker=breaker, old=old, new=new, failures=failures):
                method = log.warning if new == "open" else log.info
                method(f"breaker_{new}", breaker=breaker, previous=old, failures=failures)
            case HostStarted(instances=instances):
                log.info("host_started", instances=list(instances))
            case HostStopping(reason=reason):
                log.info("host_stopping", reason=reason)
            case HostStopped(exit_code=code, unstopped=unstopped, reason=reason):
                if unstopped:
                    log.error(
                        "host_stopped", exit_code=code, reason=reason, unstopped=list(unstopped)
                    )
                elif code:
                    log.error("host_stopped", exit_code=code, reason=reason)
                else:
                    log.info("host_stopped", exit_code=code, reason=reason)
            case _:
                pass
