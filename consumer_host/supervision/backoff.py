"""Exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from consumer_host.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    """How delays grow: ``minimum * factor**n``, capped at ``maximum``.

    Jitter is *proportional* ("randomization factor", as in the seed and in Google's
    exponential-backoff libraries): each delay ``d`` is drawn uniformly from
    ``[d * (1 - jitter), d * (1 + jitter)]`` and then capped, so the cap holds after jitter.
    ``jitter=0`` gives the exact sequence 1, 2, 4, ... with the defaults.
    """

    minimum: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not self.minimum > 0:
            raise ConfigError(f"backoff_min must be > 0 seconds, got {self.minimum!r}")
        if not self.maximum >= self.minimum:
            raise ConfigError(
                f"backoff_max ({self.maximum!r}) must be >= backoff_min ({self.minimum!r})"
            )
        if not self.factor >= 1:
            raise ConfigError(f"backoff_factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"backoff jitter must be in [0, 1), got {self.jitter!r}")

    def base_delay(self, attempt: int) -> float:
        """The delay before jitter for the ``attempt``-th wait (0-based)."""
        # Compare exponents instead of computing factor**attempt, which overflows for long outages.
        delay = self.minimum
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The jittered delay for the ``attempt``-th wait; ``rand()`` returns a float in [0, 1)."""
        base = self.base_delay(attempt)
        if not self.jitter:
            return base
        spread = base * self.jitter
        return min(self.maximum, base - spread + 2 * spread * rand())


class Backoff:
    """A stateful walk along a :class:`BackoffPolicy`: ``next()`` grows, ``reset()`` starts over."""

    def __init__(
        self, policy: BackoffPolicy | None = None, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._rand = rand
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays have been handed out since the last reset."""
        return self._attempt

    def next(self) -> float:
        """Return the next delay in seconds and advance."""
        delay = self.policy.delay(self._attempt, self._rand)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from the minimum delay."""
        self._attempt = 0
