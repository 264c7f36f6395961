"""A circuit breaker that counts failures inside a sliding time window.

closed -> open when ``threshold`` failures fall within the last ``window`` seconds;
open -> half-open once ``cooldown`` seconds have passed (never, when ``cooldown`` is ``None``);
half-open lets one caller probe: its success closes the breaker, its failure opens it again.

The restart circuit of a worker uses it with no cool-down (a tripped worker stays stopped); the
broker circuit, shared by every consumer of one broker, uses it with a cool-down.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import ConfigError


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called as ``on_transition(breaker, old_state, new_state)`` on every change of state.
TransitionHook = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """Thread-safe; every reading of time goes through the injected clock."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 5,
        window: float = 600.0,
        cooldown: float | None = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        on_transition: TransitionHook | None = None,
    ) -> None:
        if threshold < 1:
            raise ConfigError(f"circuit threshold must be >= 1, got {threshold!r}")
        if not window > 0:
            raise ConfigError(f"circuit window must be > 0 seconds, got {window!r}")
        if cooldown is not None and not cooldown >= 0:
            raise ConfigError(f"circuit cooldown must be >= 0 seconds, got {cooldown!r}")
        self.name = name
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._unannounced: list[tuple[BreakerState, BreakerState]] = []

    @property
    def state(self) -> BreakerState:
        with self._lock:
            state = self._current_state()
        self._announce()
        return state

    @property
    def failures(self) -> int:
        """Failures inside the window right now."""
        with self._lock:
            self._prune(self._clock.now())
            return len(self._failures)

    def retry_at(self) -> float | None:
        """Clock time at which an open breaker lets a probe through (``None``: never)."""
        with self._lock:
            if self._current_state() is BreakerState.CLOSED:
                return self._clock.now()
            if self.cooldown is None:
                return None
            if self._probe_started is not None:
                return self._probe_started + self.cooldown
            return self._opened_at + self.cooldown

    def allow(self) -> bool:
        """May the caller try now? In half-open, only one probe at a time is let through."""
        try:
            return self._allow()
        finally:
            self._announce()

    def _allow(self) -> bool:
        with self._lock:
            state = self._current_state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.OPEN:
                return False
            now = self._clock.now()
            # A probe that never reported back (its thread died) must not block the rest forever.
            stale = (
                self._probe_started is not None
                and self.cooldown is not None
                and now - self._probe_started >= self.cooldown
            )
            if self._probe_started is None or stale:
                self._probe_started = now
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._current_state() is not BreakerState.CLOSED:
                self._failures.clear()
                self._transition(BreakerState.CLOSED)
            self._probe_started = None
        self._announce()

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock.now()
            state = self._current_state()
            self._failures.append(now)
            self._prune(now)
            self._probe_started = None
            if state is BreakerState.HALF_OPEN or (
                state is BreakerState.CLOSED and len(self._failures) >= self.threshold
            ):
                self._opened_at = now
                self._transition(BreakerState.OPEN)
        self._announce()

    def _current_state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self.cooldown is not None
            and self._clock.now() - self._opened_at >= self.cooldown
        ):
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def _prune(self, now: float) -> None:
        # Sliding window: a failure exactly ``window`` seconds old has left it.
        while self._failures and now - self._failures[0] >= self.window:
            self._failures.popleft()

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new:
            self._unannounced.append((old, new))

    def _announce(self) -> None:
        # Hooks run outside the lock, so a hook may read the breaker without deadlocking.
        if not self._unannounced or self._on_transition is None:
            return
        with self._lock:
            pending, self._unannounced = self._unannounced, []
        for old, new in pending:
            self._on_transition(self, old, new)
