"""Liveness, readiness and status records, judged from the supervisors and what their workers
report."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from consumer_host.errors import CircuitBreakerTripped, CriticalWorkerFailed
from consumer_host.redaction import redact_text
from consumer_host.supervision.supervisor import InstanceState, Supervisor


def liveness(supervisors: Sequence[Supervisor], now: float) -> tuple[bool, dict[str, Any]]:
    """Stuck: a running instance whose worker says it has not progressed for longer than its
    ``liveness_timeout``. Workers that cannot tell (plain loops) are live while they run."""
    stuck = []
    for supervisor in supervisors:
        stuck_for = getattr(supervisor.worker, "stuck_for", None)
        if supervisor.state is not InstanceState.RUNNING or stuck_for is None:
            continue
        if stuck_for(now) > supervisor.options.liveness_timeout:
            stuck.append(supervisor.instance)
    return not stuck, {"stuck": stuck}


def readiness(
    supervisors: Sequence[Supervisor], *, started: bool, draining: bool
) -> tuple[bool, dict[str, Any]]:
    """Ready: started, not draining, and every consumer is consuming.

    A consumer is a worker that says whether it is ``ready``. A tripped consumer will never
    consume again, so it keeps the host unready (naming it and its cause) until the host is
    restarted: a pod that silently consumes less than it was deployed for is worse than one the
    platform reports. Plain workers do not take part.
    """
    if not started:
        return False, {"reason": "not started"}
    if draining:
        return False, {"reason": "draining"}
    consumers = [s for s in supervisors if hasattr(s.worker, "ready")]
    tripped = {
        s.instance: describe(s.last_error) for s in consumers if s.state is InstanceState.TRIPPED
    }
    waiting = [
        s.instance
        for s in consumers
        if s.state is not InstanceState.TRIPPED and not getattr(s.worker, "ready", True)
    ]
    if tripped:
        return False, {"reason": "tripped", "instances": [*tripped, *waiting], "causes": tripped}
    if waiting:
        return False, {"reason": "not consuming", "instances": waiting}
    return True, {}


def status_records(supervisors: Sequence[Supervisor]) -> list[dict[str, Any]]:
    """What ``Host.status()`` and /status show: one record per instance."""
    records = []
    for supervisor in supervisors:
        record: dict[str, Any] = {
            "instance": supervisor.instance,
            "worker": supervisor.registered,
            "state": str(supervisor.state),
            "critical": supervisor.options.critical,
            "restarts": supervisor.restarts,
            "failures": supervisor.failures,
            "last_error": describe(supervisor.last_error),
            "started_at": supervisor.started_at,
        }
        worker_status = getattr(supervisor.worker, "status", None)
        if callable(worker_status):
            record.update(worker_status())
        records.append(record)
    return records


def in_flight_ids(supervisors: Sequence[Supervisor]) -> list[str]:
    """The ids of the messages the instances are handling now, from workers that can tell
    (``in_flight_ids() -> list[str]``); a worker whose report fails is left out."""
    ids: list[str] = []
    for supervisor in supervisors:
        report = getattr(supervisor.worker, "in_flight_ids", None)
        if not callable(report):
            continue
        with contextlib.suppress(Exception):  # a report must never stop a drain
            ids.extend(str(message_id) for message_id in report())
    return ids


def held_retries(supervisors: Sequence[Supervisor]) -> int:
    """Retries the instances hold in process until due (kombu's virtual brokers): a drain gives
    them back to the broker with their attempt counts, so the drain line counts them."""
    held = 0
    for supervisor in supervisors:
        with contextlib.suppress(Exception):  # a report must never stop a drain
            held += int(getattr(supervisor.worker, "held_retries", 0))
    return held


def describe(error: BaseException | None) -> str | None:
    """``Type: message`` of the first cause, without secrets: the error that tripped an instance,
    not the wrapper that says it tripped."""
    if error is None:
        return None
    error = cause_of(error)
    return redact_text(f"{type(error).__name__}: {error}")


def cause_of(error: BaseException) -> BaseException:
    """Unwrap the host's own wrappers down to the error that started it."""
    while True:
        if isinstance(error, CircuitBreakerTripped):
            error = error.last_error
        elif isinstance(error, CriticalWorkerFailed):
            error = error.cause
        else:
            return error
