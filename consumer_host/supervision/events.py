"""Small frozen values describing everything worth knowing about a running host.

The supervisor, the breakers and the consumers emit these to one hook; logging, metrics and
``Host.status()`` are listeners on them, and tests assert on captured events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of every event."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerEvent(Event):
    instance: str
    """The instance name (``orders-2``)."""
    worker: str
    """The registered name (``orders``)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerStarted(WorkerEvent):
    attempt: int
    """1 on the first start, then 2, 3, ... after each restart."""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerCrashed(WorkerEvent):
    error: BaseException
    failures: int
    """Failures inside the restart window, this one included."""
    ran_for: float


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerBackingOff(WorkerEvent):
    delay: float
    failures: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerTripped(WorkerEvent):
    error: BaseException
    failures: int
    window: float
    critical: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerFinished(WorkerEvent):
    """The instance's thread has ended (stopped, or tripped)."""

    state: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerConnected(WorkerEvent):
    queue: str
    broker: str
    reconnect: bool
    node: str = ""
    """The cluster node connected to (password masked); empty for a single-node broker."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumerDisconnected(WorkerEvent):
    queue: str
    broker: str
    error: str
    delay: float
    node: str = ""
    """The cluster node that was lost (password masked); empty for a single-node broker."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerChanged(Event):
    breaker: str
    old: str
    new: str
    failures: int


@dataclass(frozen=True, kw_only=True, slots=True)
class HostStarted(Event):
    host: str
    instances: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class HostStopping(Event):
    host: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class HostStopped(Event):
    host: str
    exit_code: int
    unstopped: tuple[str, ...]
    """Instances that ignored their stop within the timeout."""
    reason: str = ""
    """Why the host stopped (the signal, the lost critical worker, ...), as in HostStopping."""


EventHook = Callable[[Event], None]
