"""One drain deadline for ``--processes``, from one place.

The user's ``--drain-timeout`` is the whole stop: what a platform allows between SIGTERM and
SIGKILL (Heroku and Kubernetes' default grace: 30 s). The parent must be gone within it, so
each child drains for a share of it, a margin less, and a child still running half the margin
after its share is SIGKILLed, with time left for the parent to reap it and exit. Both log the
same figure: ``drain_timeout`` is the whole stop; a child adds ``process_drain_timeout``, its
own share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: At most this much of the drain timeout is kept back for SIGKILLing late children and the
#: parent's own stop (reaping, flushing logs).
MARGIN = 2.0
#: ... and at most this fraction of it, so a short drain timeout still leaves the children most.
MARGIN_FRACTION = 0.2

#: How a child learns the whole stop's figure, to log it beside its own share.
BUDGET_ENV = "CONSUMER_HOST_PROCESS_DRAIN_BUDGET"


@dataclass(frozen=True)
class DrainBudget:
    """``total``: the parent's whole stop, in seconds; :attr:`child`: each child's share."""

    total: float

    @property
    def margin(self) -> float:
        return min(MARGIN, self.total * MARGIN_FRACTION)

    @property
    def child(self) -> float:
        return round(self.total - self.margin, 3)

    @property
    def kill_after(self) -> float:
        """When a child still running is SIGKILLed: half the margin after its share, so a child
        that ends its drain at its deadline (exit 3, its drain report written) is not cut off
        while it closes."""
        return round(self.child + self.margin / 2, 3)

    def child_env(self) -> dict[str, str]:
        return {BUDGET_ENV: repr(self.total)}


def budget_from(env: Mapping[str, str]) -> float | None:
    """The whole stop's drain timeout this child's parent works to, or ``None``."""
    try:
        return float(env[BUDGET_ENV])
    except (KeyError, ValueError):
        return None
