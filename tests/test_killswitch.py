"""The kill switch's state machine, driven by a fake clock in milliseconds."""

from __future__ import annotations

import pytest

from consumer_host.consuming.killswitch import KillSwitch, KillSwitchState, SwitchState
from consumer_host.errors import ConfigError
from consumer_host.testing import FakeClock


def switch(clock, **settings):
    return KillSwitchState(KillSwitch(**settings), clock)


def test_stays_closed_below_the_activation_count_whatever_the_failure_ratio():
    clock = FakeClock()
    state = switch(clock, activation=20)
    for _ in range(19):
        assert state.record(failed=True) is None
    assert state.intake() is None


def test_opens_when_the_failure_share_reaches_the_trip_ratio():
    clock = FakeClock()
    state = switch(clock, activation=20, trip_ratio=0.5)
    for n in range(19):
        state.record(failed=n % 2 == 0)  # 10 of 19 failed
        clock.advance(0.001)
    assert state.record(failed=False) is SwitchState.OPEN  # 10 of 20
    assert state.intake() == 0
    assert state.opens_for() == pytest.approx(30.0)


def test_old_outcomes_leave_the_window():
    clock = FakeClock()
    state = switch(clock, activation=4, trip_ratio=0.5, window=10.0)
    for _ in range(3):
        state.record(failed=True)
    clock.advance(11.0)
    for _ in range(3):
        assert state.record(failed=False) is None
    assert state.record(failed=True) is None  # 1 of 4 in the window


def test_after_the_pause_one_probe_goes_through_and_success_closes_it():
    clock = FakeClock()
    state = switch(clock, activation=2, trip_ratio=0.5, pause=30.0)
    state.record(failed=True)
    assert state.record(failed=True) is SwitchState.OPEN
    clock.advance(29.999)
    assert state.intake() == 0
    clock.advance(0.001)
    assert state.intake() == 1
    assert state.state is SwitchState.PROBING
    assert state.record(failed=False) is SwitchState.CLOSED
    assert state.intake() is None
    assert state.failure_ratio == 0.0


def test_a_failed_probe_doubles_the_pause_up_to_the_cap():
    clock = FakeClock()
    state = switch(clock, activation=1, trip_ratio=1.0, pause=100.0, max_pause=300.0)
    state.record(failed=True)
    pauses = []
    for _ in range(4):
        pauses.append(state.opens_for())
        clock.advance(state.opens_for())
        assert state.intake() == 1
        assert state.record(failed=True) is SwitchState.OPEN
    assert pauses == [100.0, 200.0, 300.0, 300.0]
    assert state.trips == 5


def test_a_straggler_finishing_while_open_changes_nothing():
    clock = FakeClock()
    state = switch(clock, activation=1, trip_ratio=1.0)
    state.record(failed=True)
    assert state.record(failed=False) is None
    assert state.state is SwitchState.OPEN


@pytest.mark.parametrize(
    "settings",
    [{"activation": 0}, {"trip_ratio": 0}, {"trip_ratio": 1.5}, {"pause": -1}, {"window": 0}],
)
def test_bad_settings_name_the_setting(settings):
    with pytest.raises(ConfigError, match=next(iter(settings))):
        KillSwitch(**settings)
