"""consumer-host: run long-lived message consumers as supervised, self-healing loops."""

from __future__ import annotations

from ._version import __version__
from .backoff import Backoff, BackoffPolicy
from .breaker import BreakerState, CircuitBreaker
from .broker import BrokerCircuitOptions
from .clock import Clock, SystemClock
from .errors import (
    BrokerError,
    BrokerRefused,
    BrokerUnavailable,
    CircuitBreakerTripped,
    ConfigError,
    ConsumerHostError,
    CriticalWorkerFailed,
    HostAlreadyRunning,
    Permanent,
    Reject,
    WorkerStopped,
)
from .host import Host
from .message import Message
from .supervisor import InstanceState, SupervisionOptions, Worker

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "BreakerState",
    "BrokerCircuitOptions",
    "BrokerError",
    "BrokerRefused",
    "BrokerUnavailable",
    "CircuitBreaker",
    "CircuitBreakerTripped",
    "Clock",
    "ConfigError",
    "ConsumerHostError",
    "CriticalWorkerFailed",
    "Host",
    "HostAlreadyRunning",
    "InstanceState",
    "Message",
    "Permanent",
    "Reject",
    "SupervisionOptions",
    "SystemClock",
    "Worker",
    "WorkerStopped",
    "__version__",
]
