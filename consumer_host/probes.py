"""Liveness and readiness, judged from the supervisors and what their workers report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .supervisor import InstanceState, Supervisor


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
    """Ready: started, not draining, and every consumer that has not tripped is consuming."""
    if not started:
        return False, {"reason": "not started"}
    if draining:
        return False, {"reason": "draining"}
    waiting = [
        s.instance
        for s in supervisors
        if s.state is not InstanceState.TRIPPED and not getattr(s.worker, "ready", True)
    ]
    if waiting:
        return False, {"reason": "not consuming", "instances": waiting}
    return True, {}
