import pytest

from consumer_host import BreakerState, CircuitBreaker, ConfigError
from consumer_host.testing import FakeClock


def breaker(clock, **kwargs):
    transitions = []
    kwargs.setdefault("threshold", 5)
    kwargs.setdefault("window", 600.0)
    kwargs.setdefault("cooldown", 30.0)
    b = CircuitBreaker(
        "test",
        clock=clock,
        on_transition=lambda _b, old, new: transitions.append((old, new)),
        **kwargs,
    )
    return b, transitions


class TestCircuitBreaker:
    def test_trips_at_the_fifth_failure_within_the_window(self):
        clock = FakeClock()
        b, transitions = breaker(clock)
        for _ in range(4):
            b.record_failure()
            clock.advance(100)
        assert b.state is BreakerState.CLOSED
        b.record_failure()
        assert b.state is BreakerState.OPEN
        assert transitions == [(BreakerState.CLOSED, BreakerState.OPEN)]

    def test_five_failures_spread_over_more_than_the_window_do_not_trip(self):
        clock = FakeClock()
        b, _ = breaker(clock)
        for index in range(10):
            if index:
                clock.advance(150.001)  # any five failures span 600.004 s
            b.record_failure()
        assert b.state is BreakerState.CLOSED
        assert b.failures == 4

    def test_window_slides_rather_than_resetting(self):
        """Failures at 0, 500, 550, 590 and 650 s: the one at 0 has left, four remain."""
        clock = FakeClock()
        b, _ = breaker(clock)
        for at in (0, 500, 550, 590, 650):
            clock.advance(at - clock.now())
            b.record_failure()
        assert b.state is BreakerState.CLOSED
        clock.advance(10)
        b.record_failure()
        assert b.state is BreakerState.OPEN

    def test_open_half_opens_after_the_cooldown_and_lets_one_probe_through(self):
        clock = FakeClock()
        b, transitions = breaker(clock, threshold=1, cooldown=10.0)
        b.record_failure()
        assert not b.allow()
        assert b.retry_at() == 10.0
        clock.advance(9.999)
        assert not b.allow()
        clock.advance(0.001)
        assert b.state is BreakerState.HALF_OPEN
        assert b.allow()
        assert not b.allow(), "a second caller must wait for the probe"
        b.record_success()
        assert b.state is BreakerState.CLOSED
        assert b.allow()
        assert transitions == [
            (BreakerState.CLOSED, BreakerState.OPEN),
            (BreakerState.OPEN, BreakerState.HALF_OPEN),
            (BreakerState.HALF_OPEN, BreakerState.CLOSED),
        ]

    def test_a_failed_probe_opens_it_again_for_another_cooldown(self):
        clock = FakeClock()
        b, _ = breaker(clock, threshold=1, cooldown=10.0)
        b.record_failure()
        clock.advance(10)
        assert b.allow()
        b.record_failure()
        assert b.state is BreakerState.OPEN
        assert b.retry_at() == 20.0

    def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(self):
        clock = FakeClock()
        b, _ = breaker(clock, threshold=1, cooldown=10.0)
        b.record_failure()
        clock.advance(10)
        assert b.allow()
        clock.advance(10)
        assert b.allow()

    def test_without_cooldown_it_stays_open(self):
        clock = FakeClock()
        b, _ = breaker(clock, threshold=1, cooldown=None)
        b.record_failure()
        clock.advance(10**9)
        assert b.state is BreakerState.OPEN
        assert b.retry_at() is None

    @pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"window": 0}, {"cooldown": -1}])
    def test_bad_options_raise_config_error(self, kwargs):
        with pytest.raises(ConfigError):
            CircuitBreaker("x", **kwargs)
