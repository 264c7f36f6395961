"""Per-message middleware: hooks that run around each handler call, on its thread or task.

A middleware is any object with some of these hooks (each optional, plain or ``async def``):

* ``before(message)``: before the handler;
* ``around(message)``: a context manager (or async one) the handler runs inside;
* ``after(message, outcome)``: once the handler has returned or raised, still inside every
  ``around``, with the :class:`Outcome` the host is about to settle;
* ``before_publish(queue, headers)``: before ``Host.publish`` / ``Publisher.publish`` sends a
  message (add headers here, e.g. a trace context);
* ``for_consumer(consumer)``: called once per consumer instance with a :class:`ConsumerInfo`;
  returns the middleware that consumer uses (to specialise, e.g. by broker).

They run in the order given (``after`` hooks too; ``around`` contexts nest, the first outermost).
A hook that raises fails the message as a handler error would (retried, then dead-lettered),
and is logged with the middleware's name; the loop goes on. With no middleware the handler is
called directly: nothing here is on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from consumer_host.errors import Defer, Reject
from consumer_host.message import Message

from .handling import Handler, is_async, refuse_awaitable
from .options import ConsumerOptions

_log = structlog.get_logger("consumer_host.middleware")

#: The hooks a middleware may have; it needs at least one.
HOOKS = ("before", "around", "after", "before_publish", "for_consumer")

OutcomeKind = Literal["acked", "retried", "deferred", "dead_lettered", "rejected_bad_input"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What becomes of a message: ``kind``, the delivery ``attempt``, the ``error`` (``None``
    when acked), the ``delay`` before it comes back (retried, deferred)."""

    kind: OutcomeKind
    attempt: int
    error: BaseException | None = None
    delay: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerInfo:
    """The consumer instance a middleware serves: names, queue and broker system."""

    name: str
    instance: str
    queue: str
    system: str
    """``rabbitmq``, ``redis``, or the kombu transport's scheme (``memory``, ``filesystem``)."""


def defer_step(seconds: float) -> float:
    """How long to hold a deferred message this time: the largest of 0.1 s, 0.2 s, 0.4 s ...
    that does not overshoot. On RabbitMQ every distinct delay is a queue, so arbitrary ETAs
    must map onto a few; a message comes back, and is deferred again, until it is due."""
    step = 0.1
    while step * 2 <= seconds and step < 3276.8:
        step *= 2
    return step


def outcome_for(error: BaseException | None, attempt: int, options: ConsumerOptions) -> Outcome:
    """The outcome :class:`~.settlement.Settlement` gives a handler's result (the same rules)."""
    if error is None:
        return Outcome(kind="acked", attempt=attempt)
    if isinstance(error, Defer):
        return Outcome(
            kind="deferred", attempt=attempt, error=error, delay=defer_step(error.seconds)
        )
    if isinstance(error, Reject) or attempt > options.max_retries:
        return Outcome(kind="dead_lettered", attempt=attempt, error=error)
    return Outcome(kind="retried", attempt=attempt, error=error, delay=options.retry_delay(attempt))


def name_of(middleware: Any) -> str:
    return getattr(middleware, "name", None) or type(middleware).__name__


def _hook(middleware: Any, name: str) -> Callable[..., Any] | None:
    hook = getattr(middleware, name, None)
    return hook if callable(hook) else None


class Chain:
    """One consumer's middleware, hooks looked up once."""

    def __init__(self, middleware: Iterable[Any], options: ConsumerOptions) -> None:
        self.options = options
        items = list(middleware)
        self.before = [(name_of(m), h) for m in items if (h := _hook(m, "before"))]
        self.around = [(name_of(m), h) for m in items if (h := _hook(m, "around"))]
        self.after = [(name_of(m), h) for m in items if (h := _hook(m, "after"))]

    def rejected(self, message: Message, outcome: Outcome) -> None:
        """Tell ``after`` hooks about a message settled without its handler (bad input), on
        the connection thread. A failing hook is logged; the message is already settled."""
        for name, hook in self.after:
            try:
                result = hook(message, outcome)
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
            except Exception as exc:  # noqa: BLE001 - logged with its name; the loop goes on
                _failed(name, "after", exc)

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` with the hooks around it (an ``async def`` one stays async)."""
        if is_async(handler):

            @functools.wraps(handler)
            async def run_async(message: Message) -> None:
                await self._run_async(handler, message)

            return run_async

        @functools.wraps(handler)
        def run_sync(message: Message) -> None:
            self._run_sync(handler, message)

        return run_sync

    def _run_sync(self, handler: Handler, message: Message) -> None:
        runner = _Runner()
        stack = contextlib.ExitStack() if self.around else None
        try:
            failure = self._enter_sync(runner, stack, message)
            if failure is None:
                try:
                    result = handler(message)
                    if result is not None:
                        refuse_awaitable(handler, result)
                except BaseException as exc:  # noqa: BLE001 - recorded, re-raised below
                    failure = exc
            if self.after:
                outcome = outcome_for(failure, message.attempt, self.options)
                for name, hook in self.after:
                    error = _call(name, "after", runner.call, hook, message, outcome)
                    if error is not None and failure is None:
                        failure = error
                        outcome = outcome_for(failure, message.attempt, self.options)
        finally:
            exit_error = None if stack is None else _exit(stack)
            runner.close()
        failure = failure or exit_error
        if failure is not None:
            raise failure

    def _enter_sync(
        self, runner: _Runner, stack: contextlib.ExitStack | None, message: Message
    ) -> BaseException | None:
        """Every ``before``, then every ``around`` entered; the first failure stops them."""
        for name, hook in self.before:
            failure = _call(name, "before", runner.call, hook, message)
            if failure is not None:
                return failure
        for name, hook in self.around if stack is not None else ():
            failure = _call(name, "around", runner.enter, stack, hook, message)
            if failure is not None:
                return failure
        return None

    async def _run_async(self, handler: Handler, message: Message) -> None:
        stack = contextlib.AsyncExitStack() if self.around else None
        try:
            failure = await self._enter_async(stack, message)
            if failure is None:
                try:
                    await handler(message)
                except BaseException as exc:  # noqa: BLE001 - recorded, re-raised below
                    failure = exc
            if self.after:
                outcome = outcome_for(failure, message.attempt, self.options)
                for name, hook in self.after:
                    error = await _call_async(name, "after", hook, message, outcome)
                    if error is not None and failure is None:
                        failure = error
                        outcome = outcome_for(failure, message.attempt, self.options)
        finally:
            exit_error = None if stack is None else await _exit_async(stack)
        failure = failure or exit_error
        if failure is not None:
            raise failure

    async def _enter_async(
        self, stack: contextlib.AsyncExitStack | None, message: Message
    ) -> BaseException | None:
        for name, hook in self.before:
            failure = await _call_async(name, "before", hook, message)
            if failure is not None:
                return failure
        for name, hook in self.around if stack is not None else ():
            failure = await _call_async(name, "around", _enter_context, stack, hook, message)
            if failure is not None:
                return failure
        return None


def _failed(name: str, hook: str, exc: BaseException) -> None:
    _log.error("middleware_failed", middleware=name, hook=hook, error=repr(exc), exc_info=exc)


def _call(name: str, hook: str, fn: Callable[..., Any], *args: Any) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - as from a handler: the message fails
        _failed(name, hook, exc)
        return exc
    return None


async def _call_async(
    name: str, hook: str, fn: Callable[..., Any], *args: Any
) -> BaseException | None:
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except BaseException as exc:  # noqa: BLE001 - as from a handler: the message fails
        _failed(name, hook, exc)
        return exc
    return None


async def _enter_context(
    stack: contextlib.AsyncExitStack, hook: Callable[[Message], Any], message: Message
) -> None:
    manager = hook(message)
    if hasattr(manager, "__aenter__"):
        await stack.enter_async_context(manager)
    else:
        stack.enter_context(manager)


async def _exit_async(stack: contextlib.AsyncExitStack) -> BaseException | None:
    try:
        await stack.aclose()
    except BaseException as exc:  # noqa: BLE001 - an around that fails on its way out
        _failed("around", "exit", exc)
        return exc
    return None


def _exit(stack: contextlib.ExitStack) -> BaseException | None:
    try:
        stack.close()
    except BaseException as exc:  # noqa: BLE001 - an around that fails on its way out
        _failed("around", "exit", exc)
        return exc
    return None


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class _Runner:
    """Runs ``async def`` hooks and async context managers for a plain handler: one event loop
    for the message, made only when such a hook is met."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def settle(self, result: Any) -> Any:
        if not inspect.isawaitable(result):
            return result
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(_awaited(result))

    def call(self, hook: Callable[..., Any], *args: Any) -> Any:
        return self.settle(hook(*args))

    def enter(
        self, stack: contextlib.ExitStack, hook: Callable[[Message], Any], message: Message
    ) -> None:
        manager = hook(message)
        if hasattr(manager, "__aenter__"):
            self.settle(manager.__aenter__())
            stack.push(lambda *exc_info: bool(self.settle(manager.__aexit__(*exc_info))))
        else:
            stack.enter_context(manager)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


def for_consumer(middleware: Iterable[Any], info: ConsumerInfo) -> list[Any]:
    """Each middleware as it serves ``info``'s consumer (see ``for_consumer`` above)."""
    return [m.for_consumer(info) if _hook(m, "for_consumer") else m for m in middleware]


def wrap_handler(
    handler: Handler, middleware: Iterable[Any], options: ConsumerOptions, info: ConsumerInfo
) -> tuple[Handler, Chain | None]:
    """The handler a consumer runs: ``handler`` itself when there is no middleware."""
    chosen = for_consumer(middleware, info)
    if not chosen:
        return handler, None
    chain = Chain(chosen, options)
    return chain.wrap(handler), chain
