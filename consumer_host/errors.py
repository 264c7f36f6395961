"""The exceptions consumer-host raises. Every one derives from :class:`ConsumerHostError`."""

from __future__ import annotations

import math


class ConsumerHostError(Exception):
    """Base class of every error raised by consumer-host."""


class ConfigError(ConsumerHostError, ValueError):
    """An option, URL or registration is invalid. The message names the option."""


class HostAlreadyRunning(ConsumerHostError, RuntimeError):
    """A worker was registered, or the host started, after the host had started."""


class Permanent(ConsumerHostError):
    """Raised out of a worker's ``run()``: retrying cannot help, do not restart.

    The supervisor stops the instance at once (state ``tripped``, no backoff, no restart) and
    logs one line with the cause and no traceback; a critical instance ends the host (exit 1).
    Wrong credentials, a missing vhost or an unusable Redis database are such errors: restarting
    would only repeat the refusal. Derive from it, or raise it from a worker, for the same effect.
    """


class WorkerStopped(ConsumerHostError):
    """A permanent worker returned from ``run`` while the host was not stopping."""


class CircuitBreakerTripped(ConsumerHostError):
    """A worker failed too often within its window and was stopped for good."""

    def __init__(self, worker: str, failures: int, window: float, last_error: BaseException):
        super().__init__(
            f"worker {worker!r} failed {failures} times within {window:g}s and was stopped; "
            f"last error: {type(last_error).__name__}: {last_error}"
        )
        self.worker = worker
        self.failures = failures
        self.window = window
        self.last_error = last_error


class CriticalWorkerFailed(ConsumerHostError):
    """A worker marked ``critical`` tripped its restart circuit; the host shuts down."""

    def __init__(self, worker: str, cause: BaseException):
        super().__init__(f"critical worker {worker!r} was lost: {cause}")
        self.worker = worker
        self.cause = cause


class BrokerError(ConsumerHostError):
    """The broker could not be reached or refused the consumer (message has no secrets)."""


class BrokerUnavailable(BrokerError):
    """A transient broker problem: refused, reset, timed out, missed heartbeats."""


class BrokerFailingOver(BrokerUnavailable):
    """A broker cluster is failing over (a replica being promoted, a demoted primary, a slot
    moving): one transient event, retried at a fast pace and not counted against the broker
    circuit until it lasts longer than a failover should."""


class BrokerRefused(BrokerError, Permanent):
    """A permanent broker problem: authentication, permissions, TLS verification, bad name."""


class CopyRefused(BrokerError):
    """The broker refused, or could not route, a retry or dead-letter copy (a missing queue, a
    full queue with ``x-overflow: reject-publish``, a nack). The original was given back to the
    queue unacked; the consumer backs off and goes on with other messages."""


class Defer(Exception):
    """Raised by a handler to have the message delivered again after ``seconds``, unhandled
    and without counting an attempt (Celery ``eta``/``countdown``)."""

    def __init__(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            # Raised in a handler, this fails the message (retried with backoff) instead of
            # redelivering it at once, forever.
            raise ValueError(f"Defer needs a finite number of seconds, not {seconds!r}")
        seconds = max(0.0, seconds)  # a time already past is due now
        super().__init__(f"deferred for {seconds:.3f}s")
        self.seconds = seconds


class Reject(ConsumerHostError):
    """Raise from a handler to dead-letter the message at once, without retries."""
