"""Host: registration, pools, concurrent start, stop, critical failures, run() and signals."""

import os
import signal
import threading

import pytest

from consumer_host import ConfigError, CriticalWorkerFailed, Host, HostAlreadyRunning
from consumer_host.testing import FakeClock

from .helpers import wait_until


def idle(stop):
    stop.wait()


class TestRegistration:
    def test_pools_expand_into_indexed_instances(self):
        host = Host("shop")
        host.worker("orders", pool=3)(idle)
        host.worker("beat")(idle)
        host.start()
        try:
            assert [r["instance"] for r in host.status()] == [
                "orders-1",
                "orders-2",
                "orders-3",
                "beat",
            ]
            assert {r["worker"] for r in host.status()} == {"orders", "beat"}
            threads = {t.name for t in threading.enumerate()}
            assert {"orders-1", "orders-2", "orders-3", "beat"} <= threads
        finally:
            host.stop(5)

    def test_registering_after_start_raises(self):
        host = Host("shop")
        host.worker("a")(idle)
        host.start()
        try:
            with pytest.raises(HostAlreadyRunning):
                host.worker("b")(idle)
        finally:
            host.stop(5)

    def test_duplicate_names_raise(self):
        host = Host("shop")
        host.worker("a")(idle)
        with pytest.raises(ConfigError, match="already registered"):
            host.worker("a")(idle)

    def test_instance_names_may_not_collide_across_pools(self):
        host = Host("shop")
        host.worker("orders-2")(idle)
        with pytest.raises(ConfigError, match="orders-2"):
            host.worker("orders", pool=2)(idle)

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"pool": 0}, "pool"),
            ({"pool": "2"}, "pool"),
            ({"backoff_min": 0}, "backoff_min"),
            ({"backoff_min": -1.0}, "backoff_min"),
            ({"backoff_max": 0.1}, "backoff_max"),
            ({"max_restarts": 0}, "max_restarts"),
            ({"circuit_window": 0}, "circuit_window"),
            ({"stable_run": -1}, "stable_run"),
            ({"bogus": 1}, "bogus"),
        ],
    )
    def test_bad_options_raise_config_error_naming_the_option(self, options, named):
        host = Host("shop")
        with pytest.raises(ConfigError, match=named) as info:
            host.worker("w", **options)(idle)
        assert "'w'" in str(info.value)

    def test_register_accepts_any_object_with_name_and_run(self):
        class Beat:
            name = "beat"

            def __init__(self):
                self.ran = threading.Event()

            def run(self, stop):
                self.ran.set()
                stop.wait()

        beat = Beat()
        host = Host("shop")
        host.register(beat, critical=True)
        host.start()
        assert beat.ran.wait(5)
        assert host.status()[0]["critical"] is True
        host.stop(5)

    def test_register_rejects_objects_that_cannot_run(self):
        with pytest.raises(ConfigError, match="run"):
            Host("shop").register(object())


class TestLifecycle:
    def test_all_instances_start_concurrently(self):
        """A barrier for six parties opens only if all six instances run at the same time."""
        barrier = threading.Barrier(6, timeout=5)
        passed = []
        host = Host("shop")

        @host.worker("orders", pool=4)
        @host.worker("payments", pool=2)
        def meet(stop):
            barrier.wait()
            passed.append(1)
            stop.wait()

        host.start()
        wait_until(lambda: len(passed) == 6, what="all six past the barrier")
        assert host.stop(5) == ()

    def test_stop_waits_for_every_instance(self):
        finished = []
        host = Host("shop")

        @host.worker("slow", pool=3)
        def slow(stop):
            stop.wait()
            threading.Event().wait(0.05)  # some cleanup after the stop
            finished.append(threading.current_thread().name)

        host.start()
        assert host.stop(5) == ()
        assert sorted(finished) == ["slow-1", "slow-2", "slow-3"]
        assert host.done.is_set()
        assert host.wait(0)
        assert {r["state"] for r in host.status()} == {"stopped"}

    def test_an_instance_that_ignores_stop_is_reported_and_stop_still_returns(self):
        release = threading.Event()
        host = Host("shop")
        host.worker("good", pool=2)(idle)
        host.worker("stubborn")(lambda stop: release.wait())
        host.start()
        try:
            assert host.stop(timeout=0.2) == ("stubborn",)
            assert not host.done.is_set()
            assert host.exit_code == 3
        finally:
            release.set()
        assert host.wait(5)

    def test_stop_is_idempotent(self):
        host = Host("shop")
        host.worker("a")(idle)
        host.start()
        assert host.stop(5) == ()
        assert host.stop(5) == ()

    def test_starting_twice_raises(self):
        host = Host("shop")
        host.start()
        with pytest.raises(HostAlreadyRunning):
            host.start()
        host.stop(1)


class TestCriticalFailure:
    def test_a_critical_trip_stops_the_others_gracefully_and_run_returns_1(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        cleaned_up = []

        @host.worker("steady", pool=2)
        def steady(stop):
            stop.wait()
            cleaned_up.append(threading.current_thread().name)

        @host.worker("vital", critical=True, max_restarts=3)
        def vital(stop):
            raise RuntimeError("database gone")

        assert host.run(install_signal_handlers=False) == 1
        assert sorted(cleaned_up) == ["steady-1", "steady-2"]
        states = {r["instance"]: r["state"] for r in host.status()}
        assert states == {"steady-1": "stopped", "steady-2": "stopped", "vital": "tripped"}

    def test_a_non_critical_trip_leaves_the_host_running(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        host.worker("steady")(idle)
        host.worker("flaky", max_restarts=2)(lambda stop: 1 / 0)
        host.start()
        wait_until(lambda: host.status()[1]["state"] == "tripped")
        assert not host.stopping
        assert host.status()[0]["state"] == "running"
        host.stop(5)
        assert host.exit_code == 0

    def test_on_critical_failure_replaces_the_default(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        told = []
        host.on_critical_failure(lambda name, error: told.append((name, error)))
        host.worker("steady")(idle)
        host.worker("vital", critical=True, max_restarts=1)(lambda stop: 1 / 0)
        host.start()
        wait_until(lambda: told, what="the custom handler")
        [(name, error)] = told
        assert name == "vital"
        assert isinstance(error, CriticalWorkerFailed)
        assert isinstance(error.cause, ZeroDivisionError)
        assert not host.stopping
        host.stop(5)

    def test_critical_failure_without_run_still_stops_the_host(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        host.worker("steady")(idle)
        host.worker("vital", critical=True, max_restarts=1)(lambda stop: 1 / 0)
        host.start()
        assert host.wait(5)
        assert host.exit_code == 1

    def test_a_host_whose_every_worker_tripped_exits_1(self):
        clock = FakeClock(auto_advance=True)
        host = Host("shop", clock=clock)
        host.worker("flaky", max_restarts=1)(lambda stop: 1 / 0)
        assert host.run(install_signal_handlers=False) == 1


class TestSignals:
    def test_sigterm_stops_gracefully_and_run_returns_0(self):
        host = Host("shop")
        finished = []

        @host.worker("w", pool=2)
        def w(stop):
            if threading.current_thread().name == "w-1":
                os.kill(os.getpid(), signal.SIGTERM)
            stop.wait()
            finished.append(1)

        before = signal.getsignal(signal.SIGTERM)
        assert host.run() == 0
        assert finished == [1, 1]
        assert signal.getsignal(signal.SIGTERM) is before
