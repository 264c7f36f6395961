"""Consume tasks that Celery clients send, so a Celery worker can be replaced without touching
the producers (`app.send_task(...)`, `task.delay(...)`, `apply_async(countdown=..., expires=...)`).

Celery's message protocol 2 (and 1) is read here without importing Celery: the task name is in
the ``task`` header, the body is ``[args, kwargs, embed]``. One consumer per queue dispatches by
task name. Results are stored through Celery's own backend classes only when a
``result_backend`` is given, and only then is the ``celery`` package imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumer_host.errors import ConfigError, Defer, Reject
from consumer_host.message import Message


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """What a bound task handler (``bind=True``) gets as its first argument."""

    id: str | None
    name: str
    retries: int
    eta: datetime | None
    expires: datetime | None
    headers: dict[str, Any]
    message: Message = field(repr=False)


@dataclass
class _Task:
    fn: Callable[..., Any]
    bind: bool


class CeleryDispatcher:
    """The handler of one queue's consumer: parse, check, call the named task, store results."""

    def __init__(self, queue: str, result_backend: str | None, max_retries: int) -> None:
        self.queue = queue
        self.result_backend = result_backend
        self.max_retries = max_retries
        self.tasks: dict[str, _Task] = {}
        self._backend: Any = None
        self._backend_lock = threading.Lock()

    def add(self, name: str, fn: Callable[..., Any], *, bind: bool) -> None:
        if name in self.tasks:
            raise ConfigError(f"celery task {name!r} is registered twice on queue {self.queue!r}")
        self.tasks[name] = _Task(fn, bind)

    def __call__(self, message: Message) -> None:
        name, task_id, args, kwargs, info = _parse(message)
        task = self.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise Reject(f"unknown task {name!r} on queue {self.queue!r} (known: {known})")
        now = datetime.now(UTC)
        expires = _when(info.get("expires"))
        if expires is not None and expires <= now:
            raise Reject(f"task {name!r} ({task_id}) expired at {expires.isoformat()}")
        eta = _when(info.get("eta"))
        if eta is not None and eta > now:
            raise Defer((eta - now).total_seconds())
        context = TaskContext(
            id=task_id,
            name=name,
            retries=int(info.get("retries") or 0),
            eta=eta,
            expires=expires,
            headers=message.headers,
            message=message,
        )
        try:
            result = task.fn(context, *args, **kwargs) if task.bind else task.fn(*args, **kwargs)
        except Reject:
            raise
        except Exception as exc:
            if self.result_backend and task_id and message.attempt > self.max_retries:
                # The last attempt failed: the producer's AsyncResult gets the exception.
                failure = exc
                self._store(lambda backend: backend.mark_as_failure(task_id, failure))
            raise
        if self.result_backend and task_id:
            self._store(lambda backend: backend.mark_as_done(task_id, result))

    def _store(self, write: Callable[[Any], None]) -> None:
        with self._backend_lock:
            if self._backend is None:
                from celery import Celery

                self._backend = Celery("consumer-host", backend=self.result_backend).backend
        write(self._backend)


def _parse(message: Message) -> tuple[str, str | None, list[Any], dict[str, Any], dict[str, Any]]:
    headers = message.headers
    body = message.body
    if isinstance(headers.get("task"), str):  # protocol 2
        if not (isinstance(body, list) and len(body) >= 2):
            raise Reject("a Celery protocol 2 message needs a body of [args, kwargs, embed]")
        args, kwargs = body[0], body[1]
        info = headers
        name, task_id = headers["task"], headers.get("id")
    elif isinstance(body, dict) and isinstance(body.get("task"), str):  # protocol 1
        args, kwargs = body.get("args") or [], body.get("kwargs") or {}
        info = body
        name, task_id = body["task"], body.get("id")
    else:
        raise Reject("not a Celery task message: no task name in the headers or the body")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise Reject(f"task {name!r}: args must be a list and kwargs an object")
    return name, task_id, args, kwargs, info


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
