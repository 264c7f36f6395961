"""The kill switch: stop taking messages while most of them fail, instead of dead-lettering a
whole queue because a database is down (MassTransit's kill switch).

Closed, it watches handler outcomes in a sliding window. Once at least ``activation`` messages
were handled there and the share of failures reaches ``trip_ratio``, it opens: the consumer takes
nothing for ``pause`` seconds (the messages stay in the queue, nothing is dead-lettered because of
it). Then it lets one message through as a probe: success closes it, failure opens it again for
twice as long, up to ``max_pause``. Only handler failures count; bad input, ``Reject`` and
``Defer`` say nothing about a downstream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from consumer_host.clock import Clock
from consumer_host.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class KillSwitch:
    """``kill_switch=KillSwitch(...)`` on a consumer; ``kill_switch=None`` turns it off."""

    activation: int = 20
    trip_ratio: float = 0.5
    pause: float = 30.0
    window: float = 60.0
    max_pause: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.activation, bool) or not isinstance(self.activation, int):
            raise ConfigError(f"kill switch activation must be an integer, got {self.activation!r}")
        if self.activation < 1:
            raise ConfigError(f"kill switch activation must be >= 1, got {self.activation!r}")
        if not 0 < self.trip_ratio <= 1:
            raise ConfigError(f"kill switch trip_ratio must be in (0, 1], got {self.trip_ratio!r}")
        for name in ("pause", "window", "max_pause"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"kill switch {name} must be > 0 seconds, got {value!r}")


class SwitchState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    PROBING = "probing"


class KillSwitchState:
    """One consumer instance's kill switch, driven by outcomes and the clock."""

    def __init__(self, settings: KillSwitch, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        # One [second, handled, failed] bucket per second: bounded whatever the message rate.
        self._buckets: deque[list[int]] = deque()
        self._handled = 0
        self._failures = 0
        self.state = SwitchState.CLOSED
        self.trips = 0
        self._pause = settings.pause
        self._until = 0.0

    def record(self, failed: bool) -> SwitchState | None:
        """Count one handler outcome; return the new state when this one changed it."""
        now = self._clock.now()
        if self.state is SwitchState.PROBING:
            if failed:
                self._pause = min(self._pause * 2, self.settings.max_pause)
                return self._open(now)
            self._close()
            return self.state
        if self.state is SwitchState.OPEN:
            return None  # a straggler that was in flight when it opened
        second = int(now)
        buckets = self._buckets
        if buckets and buckets[-1][0] == second:
            bucket = buckets[-1]
        else:
            bucket = [second, 0, 0]
            buckets.append(bucket)
            self._forget_before(now - self.settings.window)
        bucket[1] += 1
        bucket[2] += failed
        self._handled += 1
        self._failures += failed
        handled = self._handled
        if (
            handled >= self.settings.activation
            and self._failures >= self.settings.trip_ratio * handled
        ):
            return self._open(now)
        return None

    def intake(self) -> int | None:
        """How many messages may be in hand now: ``None`` for no limit, ``0`` while open,
        ``1`` while a probe may go through."""
        if self.state is SwitchState.CLOSED:
            return None
        if self.state is SwitchState.OPEN and self._clock.now() >= self._until:
            self.state = SwitchState.PROBING
        return 1 if self.state is SwitchState.PROBING else 0

    def opens_for(self) -> float:
        """Seconds until a probe may go through (0 unless open)."""
        if self.state is not SwitchState.OPEN:
            return 0.0
        return max(0.0, self._until - self._clock.now())

    @property
    def failure_ratio(self) -> float:
        return self._failures / self._handled if self._handled else 0.0

    def _open(self, now: float) -> SwitchState:
        self.state = SwitchState.OPEN
        self.trips += 1
        self._until = now + self._pause
        return self.state

    def _close(self) -> None:
        self.state = SwitchState.CLOSED
        self._pause = self.settings.pause
        self._buckets.clear()
        self._handled = 0
        self._failures = 0

    def _forget_before(self, horizon: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] + 1 <= horizon:
            _, handled, failed = buckets.popleft()
            self._handled -= handled
            self._failures -= failed
