"""consumer-host: run long-lived message consumers as supervised, self-healing loops."""

from __future__ import annotations

from consumer_host.consuming.celery_tasks import TaskContext
from consumer_host.consuming.killswitch import KillSwitch
from consumer_host.consuming.middleware import ConsumerInfo, Outcome
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.supervision.backoff import Backoff, BackoffPolicy
from consumer_host.supervision.breaker import BreakerState, CircuitBreaker
from consumer_host.supervision.supervisor import InstanceState, SupervisionOptions, Worker
from consumer_host.transports.broker import BrokerCircuitOptions
from consumer_host.transports.publisher import Publisher

from ._version import __version__
from .clock import Clock, SystemClock
from .errors import (
    BrokerError,
    BrokerFailingOver,
    BrokerRefused,
    BrokerUnavailable,
    CircuitBreakerTripped,
    ConfigError,
    ConsumerHostError,
    CopyRefused,
    CriticalWorkerFailed,
    Defer,
    HostAlreadyRunning,
    Permanent,
    Reject,
    WorkerStopped,
)
from .host import Host
from .message import Message

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "BreakerState",
    "BrokerCircuitOptions",
    "BrokerError",
    "BrokerFailingOver",
    "BrokerRefused",
    "BrokerUnavailable",
    "CircuitBreaker",
    "CircuitBreakerTripped",
    "Clock",
    "ConfigError",
    "ConsumerHostError",
    "ConsumerInfo",
    "ConsumerOptions",
    "CopyRefused",
    "CriticalWorkerFailed",
    "Defer",
    "Host",
    "HostAlreadyRunning",
    "InstanceState",
    "KillSwitch",
    "Message",
    "Outcome",
    "Permanent",
    "Publisher",
    "Reject",
    "SupervisionOptions",
    "SystemClock",
    "TaskContext",
    "Worker",
    "WorkerStopped",
    "__version__",
]
