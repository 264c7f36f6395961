"""The registration keywords, typed: what ``mypy --strict`` and editors check a user's
``@host.consumer(...)``, ``@host.worker(...)``, ``@host.celery_task(...)`` and
``host.register(...)`` against.

The dataclasses (:class:`~consumer_host.ConsumerOptions`,
:class:`~consumer_host.SupervisionOptions`) stay the declaration the host validates at run time;
``tests/test_typing.py`` proves these agree with them, name for name and type for type.
"""

from __future__ import annotations

from typing import TypedDict

from consumer_host.consuming.options import ConsumerKeywords, ConsumerSettings
from consumer_host.supervision.supervisor import TripHook


class SupervisionKeywords(TypedDict, total=False):
    """Every :class:`~consumer_host.SupervisionOptions` keyword."""

    pool: int
    critical: bool
    backoff_min: float
    backoff_max: float
    backoff_factor: float
    backoff_jitter: float
    max_restarts: int
    circuit_window: float
    stable_run: float
    liveness_timeout: float
    on_trip: TripHook | None


class ConsumerRegistration(ConsumerKeywords, SupervisionKeywords, total=False):
    """What ``@host.consumer(name, ...)`` takes: consumer and supervision options."""


class CeleryQueueKeywords(ConsumerSettings, SupervisionKeywords, total=False):
    """What ``@host.celery_task(name, ...)`` takes besides ``queue``, ``bind`` and
    ``result_backend``: the options of the queue's consumer (set by its first task)."""


class CeleryTaskKeywords(CeleryQueueKeywords, total=False):
    """What ``@host.celery_task(name, ...)`` takes."""

    queue: str
    bind: bool
    result_backend: str | None
