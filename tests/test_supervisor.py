"""The supervisor, driven through a Host with a fake clock: no real backoff is ever slept."""

import io
import threading

import pytest
import structlog

from consumer_host import CircuitBreakerTripped, Host, WorkerStopped
from consumer_host.operating.logs import configure_logging
from consumer_host.supervision.events import (
    WorkerBackingOff,
    WorkerCrashed,
    WorkerStarted,
    WorkerTripped,
)
from consumer_host.testing import FakeClock

from .helpers import EventLog, wait_until


class Boom(Exception):
    pass


def crash_loop_host(clock, **options):
    host = Host("test", clock=clock)
    events = EventLog()
    host.subscribe(events)
    runs = []

    @host.worker("crashy", backoff_jitter=0, **options)
    def crashy(stop):
        runs.append(clock.now())
        raise Boom(f"run {len(runs)}")

    return host, events, runs


class TestRestarts:
    def test_a_crash_loop_backs_off_exponentially_and_trips_at_max_restarts(self):
        clock = FakeClock(auto_advance=True)
        host, events, runs = crash_loop_host(clock)
        host.start()
        assert host.wait(5)
        assert clock.waits == [1.0, 2.0, 4.0, 8.0]
        assert runs == [0.0, 1.0, 3.0, 7.0, 15.0]
        [record] = host.status()
        assert record["state"] == "tripped"
        assert record["restarts"] == 4
        assert record["failures"] == 5
        assert record["last_error"] == "Boom: run 5", "the cause, not the breaker's wrapper"
        [tripped] = events.of(WorkerTripped)
        assert tripped.failures == 5
        assert isinstance(tripped.error, Boom)

    def test_failures_spread_over_more_than_the_window_never_trip(self):
        clock = FakeClock(auto_advance=True)
        host = Host("test", clock=clock)
        runs = []

        @host.worker("slow-crasher", backoff_jitter=0, stable_run=10_000)
        def slow_crasher(stop):
            runs.append(clock.now())
            if len(runs) > 12:
                stop.wait()
                return
            clock.advance(200)  # runs for 200 s, then fails: never 5 failures in 600 s
            raise Boom

        host.start()
        wait_until(lambda: len(runs) > 12, what="thirteen runs")
        assert host.status()[0]["state"] == "running"
        assert host.stop(5) == ()

    def test_a_stable_run_resets_the_backoff(self):
        clock = FakeClock(auto_advance=True)
        host = Host("test", clock=clock)
        runs = []

        @host.worker("flaky", backoff_jitter=0, max_restarts=100)
        def flaky(stop):
            runs.append(clock.now())
            if len(runs) in (4, 5):
                clock.advance(31)  # longer than stable_run (30 s)
            if len(runs) > 7:
                stop.wait()
                return
            raise Boom

        host.start()
        wait_until(lambda: len(runs) > 7, what="eight runs")
        host.stop(5)
        assert clock.waits[:7] == [1.0, 2.0, 4.0, 1.0, 1.0, 2.0, 4.0]

    def test_returning_while_the_host_runs_is_a_failure(self):
        clock = FakeClock(auto_advance=True)
        host = Host("test", clock=clock)
        events = EventLog()
        host.subscribe(events)
        host.worker("quitter", max_restarts=2)(lambda stop: None)
        host.start()
        assert host.wait(5)
        crashes = events.of(WorkerCrashed)
        assert len(crashes) == 2
        assert all(isinstance(c.error, WorkerStopped) for c in crashes)
        assert "returned from run()" in host.status()[0]["last_error"]

    def test_jittered_delays_use_the_injected_random_source(self):
        clock = FakeClock(auto_advance=True)
        host = Host("test", clock=clock, rand=lambda: 0.0)
        host.worker("j", max_restarts=4)(lambda stop: (_ for _ in ()).throw(Boom()))
        host.start()
        assert host.wait(5)
        assert clock.waits == [0.5, 1.0, 2.0]

    def test_a_stop_interrupts_the_backoff_wait(self):
        clock = FakeClock()  # time never moves: only the stop can end the wait
        host, events, runs = crash_loop_host(clock)
        host.start()
        wait_until(lambda: events.of(WorkerBackingOff), what="a backoff")
        assert host.stop(5) == ()
        assert host.status()[0]["state"] == "stopped"
        assert len(runs) == 1


class TestTrip:
    def test_on_trip_receives_name_error_count_and_window(self):
        clock = FakeClock(auto_advance=True)
        told = []
        host, _, _ = crash_loop_host(
            clock, max_restarts=3, circuit_window=60.0, on_trip=lambda *args: told.append(args)
        )
        host.start()
        assert host.wait(5)
        [(name, error, failures, window)] = told
        assert (name, failures, window) == ("crashy", 3, 60.0)
        assert isinstance(error, Boom)

    def test_a_failing_on_trip_callback_is_contained(self):
        clock = FakeClock(auto_advance=True)

        def bad_callback(*_args):
            raise RuntimeError("callback bug")

        host, _, _ = crash_loop_host(clock, max_restarts=1, on_trip=bad_callback)
        with structlog.testing.capture_logs() as logs:
            host.start()
            assert host.wait(5)
        assert host.status()[0]["state"] == "tripped"
        assert any(entry["event"] == "on_trip_failed" for entry in logs)

    def test_tripped_error_type(self):
        error = CircuitBreakerTripped("w", 5, 600.0, Boom("x"))
        assert "5 times within 600s" in str(error)


class TestCrashLogging:
    def test_the_traceback_of_a_crash_is_logged_once(self):
        clock = FakeClock(auto_advance=True)
        out = io.StringIO()
        configure_logging("console", "info", stream=out)
        try:
            host = Host("shop", clock=clock)

            @host.worker("once", max_restarts=1)
            def explode_here(stop):
                raise Boom("kaboom")

            host.start()
            assert host.wait(5)
        finally:
            structlog.reset_defaults()
        text = out.getvalue()
        assert text.count("Traceback (most recent call last)") == 1
        assert "explode_here" in text
        assert "Boom: kaboom" in text
        assert "worker_crashed" in text
        assert "worker_tripped" in text

    def test_crash_events_carry_worker_and_host(self):
        clock = FakeClock(auto_advance=True)
        host, _, _ = crash_loop_host(clock, max_restarts=2)
        with structlog.testing.capture_logs() as logs:
            host.start()
            assert host.wait(5)
        crashes = [e for e in logs if e["event"] == "worker_crashed"]
        assert len(crashes) == 2
        assert all(e["worker"] == "crashy" and e["host"] == "test" for e in crashes)
        assert all(isinstance(e["exc_info"], Boom) for e in crashes)
        restarts = [e for e in logs if e["event"] == "worker_restarting"]
        assert [e["delay"] for e in restarts] == [1.0]


@pytest.mark.parametrize("pool", [1, 3])
def test_every_start_is_announced(pool):
    host = Host("test")
    events = EventLog()
    host.subscribe(events)
    host.worker("w", pool=pool)(lambda stop: stop.wait())
    host.start()
    wait_until(lambda: len(events.of(WorkerStarted)) == pool)
    host.stop(5)
    assert threading.active_count() < 50


def test_a_failing_stop_hook_keeps_no_other_instance_running():
    """``on_stop_requested`` (a consumer's wake) that raises: every instance still stops."""
    host = Host("test")

    class Stubborn:
        name = "stubborn"

        def run(self, stop: threading.Event) -> None:
            stop.wait()

        def on_stop_requested(self) -> None:
            raise RuntimeError("cannot wake")

    host.register(Stubborn())

    @host.worker("plain")
    def plain(stop):
        stop.wait()

    host.start()
    host.stop(timeout=5)
    assert host.wait(5)
    assert [record["state"] for record in host.status()] == ["stopped", "stopped"]
