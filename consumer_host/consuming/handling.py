"""One message in a handler: the job that carries it, and running the handler to an outcome.

Whatever a handler does is the message's outcome, never the loop's: any ``BaseException``
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, a custom subclass) is a failure, and
an exception whose ``str()`` itself raises still gets described. A plain handler that returns an
awaitable was meant to be ``async def``: it fails the message instead of being acked unrun.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from structlog.contextvars import bind_contextvars, reset_contextvars

from consumer_host.message import Delivery, Message

Handler = Callable[[Message], Any]


@dataclass(slots=True, eq=False)
class Job:
    """A delivery on its way through a handler, from dispatch to settlement."""

    delivery: Delivery
    message: Message
    attempt: int
    generation: int
    """The connection it came on: a job that finishes after a reconnect is not settled (the
    broker has already taken the message back and will deliver it again)."""
    key: Any = None
    """Its ``partition_by`` key, or ``None``."""
    started: float | None = None
    """Clock reading when the handler began; ``None`` while it waits for a slot."""
    thread_id: int | None = None
    task: Any = None
    """The asyncio task running it (async handlers), for stack reports."""
    error: BaseException | None = None
    duration: float = 0.0
    stuck_reported: bool = field(default=False, repr=False)


def message_for(delivery: Delivery, body: Any, attempt: int, queue: str) -> Message:
    """The handler's view of a delivery. Its headers are the handler's own copy: whatever it
    changes must not leak into a retry or dead-letter copy."""
    headers = delivery.headers
    if headers:
        nested = any(isinstance(value, dict | list) for value in headers.values())
        headers = copy.deepcopy(headers) if nested else dict(headers)
    else:
        headers = {}
    return Message(
        body=body,
        headers=headers,
        content_type=delivery.content_type,
        message_id=delivery.message_id,
        delivery_info=delivery.delivery_info,
        redelivered=delivery.redelivered,
        attempt=attempt,
        queue=queue,
        raw=delivery.body,
    )


def is_async(handler: Handler) -> bool:
    """``async def`` functions, and objects whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - the method itself is inspected
    return inspect.iscoroutinefunction(call)


class HandlerReturnedAwaitable(Exception):
    """A plain handler returned a coroutine or other awaitable: it never ran."""


def refuse_awaitable(handler: Handler, result: Any) -> None:
    """A plain handler that returned an awaitable never ran: raise, and close a coroutine so
    that no "never awaited" warning comes instead."""
    if result is not None and inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise HandlerReturnedAwaitable(
            f"{describe_callable(handler)} returned {type(result).__name__} instead of "
            "running: declare it `async def` so the host awaits it"
        )


def run_sync(handler: Handler, job: Job, now: Callable[[], float]) -> None:
    """Run a plain handler for ``job``, recording its outcome on the job. Never raises.

    The handler's log lines carry ``message_id`` (and, bound once per thread by the executor,
    ``instance`` and ``queue``), through structlog and stdlib logging alike."""
    job.started = now()
    job.thread_id = threading.get_ident()
    tokens = bind_contextvars(message_id=job.message.message_id)  # computed once, in message_for
    began = perf_counter()
    try:
        result = handler(job.message)
        if result is not None:  # the common case stays one comparison
            refuse_awaitable(handler, result)
    except BaseException as exc:  # noqa: BLE001 - everything a handler raises is a message failure
        job.error = exc
    finally:
        job.duration = perf_counter() - began
        reset_contextvars(**tokens)


async def run_async(handler: Handler, job: Job, now: Callable[[], float]) -> None:
    """Await an ``async def`` handler for ``job``, recording its outcome. Never raises."""
    job.started = now()
    tokens = bind_contextvars(message_id=job.message.message_id)  # computed once, in message_for
    began = perf_counter()
    try:
        await handler(job.message)
    except BaseException as exc:  # noqa: BLE001 - CancelledError included: the message failed
        job.error = exc
    finally:
        job.duration = perf_counter() - began
        reset_contextvars(**tokens)


def describe_error(error: BaseException) -> str:
    """``Type: text``, even when the exception's ``__str__`` raises."""
    name = type(error).__name__
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not break the loop
        try:
            text = repr(error)
        except BaseException:  # noqa: BLE001
            text = "<unprintable exception>"
    return f"{name}: {text}" if text else name


def describe_callable(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
