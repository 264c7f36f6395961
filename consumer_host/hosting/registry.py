"""What a host runs: registered workers and consumers, and how they expand into pools."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar, Unpack

from consumer_host.consuming.consumer import Consumer
from consumer_host.consuming.handling import Handler, is_async
from consumer_host.consuming.options import ConsumerOptions, split_options, unknown_option
from consumer_host.errors import ConfigError, HostAlreadyRunning
from consumer_host.supervision.supervisor import SupervisionOptions, Worker

from .keywords import CeleryQueueKeywords, ConsumerRegistration, SupervisionKeywords

H = TypeVar("H", bound=Handler)
"""A handler's own type: the decorator gives it back unchanged."""
W = TypeVar("W", bound=Callable[[threading.Event], object])
T = TypeVar("T", bound=Callable[..., Any])
#: Supervision options that must be integers, and ``True`` is not one.
_INTEGERS = ("pool", "max_restarts")


class FunctionWorker:
    """Adapts a plain function ``fn(stop)`` to the worker protocol."""

    def __init__(self, name: str, fn: Callable[[threading.Event], object]) -> None:
        self.name = name
        self.fn = fn

    def run(self, stop: threading.Event) -> None:
        self.fn(stop)


@dataclass(frozen=True)
class Registration:
    """One registered worker: its name, how to build an instance, and its options."""

    name: str
    factory: Callable[[str], Worker]
    options: SupervisionOptions
    kind: str = "worker"
    details: tuple[tuple[str, Any], ...] = ()
    consumer_options: ConsumerOptions | None = None
    handler: Handler | None = None
    """A consumer's handler, as registered (what ``consumer_host.testing`` drives)."""

    def instance_names(self) -> list[str]:
        if self.options.pool == 1:
            return [self.name]
        return [f"{self.name}-{index}" for index in range(1, self.options.pool + 1)]


#: ``make(instance, registered, handler, options)``: the host builds consumers (it knows the
#: broker, its circuits and its metrics).
ConsumerFactory = Callable[[str, str, Handler, ConsumerOptions], Consumer]


class Registry:
    """What a host runs: its registrations, and how each expands into a pool.

    Everything here happens before the host starts; once :meth:`freeze` was called it raises
    ``HostAlreadyRunning``.
    """

    def __init__(self, name: str, make_consumer: ConsumerFactory) -> None:
        self.name = name
        self._make_consumer = make_consumer
        self._registrations: dict[str, Registration] = {}
        self._celery_queues: dict[str, Any] = {}
        self._state_lock = threading.Lock()
        self._started = False

    def freeze(self) -> list[Registration]:
        """No change after this (the host is starting); the registrations, in order."""
        with self._state_lock:
            if self._started:
                raise HostAlreadyRunning(f"host {self.name!r} was already started")
            self._started = True
            return list(self._registrations.values())

    def get(self, name: str) -> Registration | None:
        return self._registrations.get(name)

    def liveness_timeout(self, name: str) -> float:
        """The registered worker's ``liveness_timeout`` (60 s for a name not registered)."""
        registration = self.get(name)
        return 60.0 if registration is None else registration.options.liveness_timeout

    def consumer_names(self) -> list[str]:
        """The registered consumers (what pause and resume address)."""
        return [name for name, reg in self._registrations.items() if reg.kind != "worker"]

    def worker(self, name: str, **options: Unpack[SupervisionKeywords]) -> Callable[[W], W]:
        """Decorator: run ``fn(stop)`` as a supervised loop (options as :meth:`register`)."""
        supervision = self._options(name, options)

        def decorate(fn: W) -> W:
            self._add(
                Registration(name, lambda instance: FunctionWorker(instance, fn), supervision)
            )
            return fn

        return decorate

    def consumer(self, name: str, **options: Unpack[ConsumerRegistration]) -> Callable[[H], H]:
        """Decorator: consume ``queue`` with ``handler(message)``, at least once.

        ``handler`` is a plain function or an ``async def`` one. Returning acks the message;
        raising retries it after ``retry_backoff_min`` doubling to ``retry_backoff_max``, and
        after ``max_retries`` retries moves it to ``dead_letter`` (default ``<queue>.dlq``) with
        the error in its headers; raising :class:`~consumer_host.Reject` dead-letters it at
        once. Every option of :class:`~consumer_host.options.ConsumerOptions` (``queue``,
        ``concurrency``, ``prefetch``, ...) and of supervision (``pool``, ``critical``, ...) is
        a keyword here; a misspelt one is an error that names the nearest.
        """
        who = f"consumer {name!r}"
        consumer_given, supervision = split_options(
            options, ConsumerOptions, SupervisionOptions, who=who
        )
        if "queue" not in consumer_given:
            raise ConfigError(f"{who}: queue= is required (the queue to consume)")
        try:
            consumer_options = ConsumerOptions(**consumer_given)
        except ConfigError as exc:
            raise ConfigError(f"{who}: {exc}") from None
        supervision_options = self._options(name, supervision)

        def decorate(handler: H) -> H:
            if not callable(handler):
                raise ConfigError(f"{who}: the handler must be callable")
            self._add(
                Registration(
                    name,
                    lambda instance: self._make_consumer(instance, name, handler, consumer_options),
                    supervision_options,
                    kind="consumer",
                    consumer_options=consumer_options,
                    handler=handler,
                    details=(
                        ("queue", consumer_options.queue),
                        ("dead_letter", consumer_options.dead_letter_queue),
                        ("concurrency", consumer_options.concurrency),
                        ("prefetch", consumer_options.prefetch_count),
                        ("max_retries", consumer_options.max_retries),
                        ("handler", "async" if is_async(handler) else "sync"),
                    ),
                )
            )
            return handler

        return decorate

    def celery_task(
        self,
        name: str,
        *,
        queue: str = "celery",
        bind: bool = False,
        result_backend: str | None = None,
        **options: Unpack[CeleryQueueKeywords],
    ) -> Callable[[T], T]:
        """Decorator: handle the Celery task ``name`` (``fn(*args, **kwargs)``; with
        ``bind=True``, ``fn(task_context, *args, **kwargs)``) from ``queue``.

        Every task on a queue shares one consumer (``celery.<queue>``) that dispatches by task
        name; the first task registered on a queue sets its consumer and supervision
        ``options`` (``pool``, ``max_retries``, ...). Unknown task names and expired tasks are
        dead-lettered; ``eta``/``countdown`` is honoured without blocking the loop. With
        ``result_backend`` (the producers' Celery result backend URL), return values and final
        failures are stored so ``AsyncResult.get()`` works; this needs ``consumer-host[celery]``.
        """
        from consumer_host.consuming.celery_tasks import CeleryDispatcher

        dispatcher = self._celery_queues.get(queue)
        if dispatcher is None:
            dispatcher = CeleryDispatcher(queue, result_backend, options.get("max_retries", 3))
            self.consumer(f"celery.{queue}", queue=queue, **options)(dispatcher)
            self._celery_queues[queue] = dispatcher
        elif options:
            raise ConfigError(
                f"celery task {name!r}: options for queue {queue!r} were set by the first task "
                f"registered on it ({', '.join(sorted(dispatcher.tasks))})"
            )
        elif result_backend:
            dispatcher.result_backend = result_backend

        def decorate(fn: T) -> T:
            if self._started:
                raise HostAlreadyRunning(f"cannot register {name!r}: the host is running")
            dispatcher.add(name, fn, bind=bind)
            return fn

        return decorate

    def register(
        self, worker: Worker, *, name: str | None = None, **options: Unpack[SupervisionKeywords]
    ) -> None:
        """Register an object with ``name`` and ``run(stop)``.

        With ``pool > 1`` the same object's ``run`` is called from every instance's thread, so it
        must keep its per-run state in locals.
        """
        if not callable(getattr(worker, "run", None)):
            raise ConfigError(f"{worker!r} has no run(stop) method and cannot be supervised")
        name = name or getattr(worker, "name", None)
        if not isinstance(name, str):
            raise ConfigError(f"{worker!r} needs a name: give it a .name or pass name=")
        self._add(Registration(name, lambda _instance: worker, self._options(name, options)))

    def _options(self, name: str, options: Mapping[str, Any]) -> SupervisionOptions:
        known = SupervisionOptions.__dataclass_fields__
        for key in options:
            if key not in known:
                raise ConfigError(unknown_option(key, known, who=f"worker {name!r}"))
        for key in _INTEGERS:
            if isinstance(options.get(key), bool):
                raise ConfigError(f"worker {name!r}: {key} must be an integer >= 1, not a bool")
        try:
            return SupervisionOptions(**options)
        except ConfigError as exc:
            raise ConfigError(f"worker {name!r}: {exc}") from None

    def _add(self, registration: Registration) -> None:
        with self._state_lock:
            if self._started:
                raise HostAlreadyRunning(
                    f"cannot register {registration.name!r}: host {self.name!r} is already running"
                )
            if not registration.name or not isinstance(registration.name, str):
                raise ConfigError(
                    f"a worker name must be a non-empty string, got {registration.name!r}"
                )
            taken = {inst for reg in self._registrations.values() for inst in reg.instance_names()}
            clash = taken.intersection(registration.instance_names())
            if registration.name in self._registrations or clash:
                names = ", ".join(sorted(clash)) or registration.name
                raise ConfigError(
                    f"a worker named {registration.name!r} is already registered "
                    f"(instance names must be unique: {names})"
                )
            self._registrations[registration.name] = registration

    def restrict_to(self, names: list[str]) -> None:
        """Keep only the named workers (``--only``); an unknown name is a :class:`ConfigError`."""
        with self._state_lock:
            if self._started:
                raise HostAlreadyRunning("workers cannot be chosen once the host has started")
            unknown = sorted(set(names) - set(self._registrations))
            if unknown:
                known = ", ".join(self._registrations) or "none"
                raise ConfigError(f"no worker named {', '.join(unknown)} (workers: {known})")
            self._registrations = {n: r for n, r in self._registrations.items() if n in names}

    def set_pool(self, name: str, size: int) -> None:
        """Change a worker's pool size before start (``--pool NAME=N``)."""
        with self._state_lock:
            if self._started:
                raise HostAlreadyRunning("pool sizes cannot change once the host has started")
            registration = self._registrations.get(name)
            if registration is None:
                known = ", ".join(self._registrations) or "none"
                raise ConfigError(f"--pool: no worker named {name!r} (workers: {known})")
            options = self._options(name, {**_fields(registration.options), "pool": size})
            self._registrations[name] = replace(registration, options=options)

    @property
    def registrations(self) -> list[Registration]:
        return list(self._registrations.values())


def _fields(options: SupervisionOptions) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in fields(options)}
