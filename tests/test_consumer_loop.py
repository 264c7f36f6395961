"""The consumer loop against a scripted transport and a fake clock: reconnects, the broker
circuit, retries and what counts as a loop failure."""

from __future__ import annotations

import threading

import pytest

from consumer_host import BreakerState, BrokerRefused, BrokerUnavailable, CircuitBreaker
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.errors import ConfigError
from consumer_host.supervision.events import BreakerChanged, ConsumerConnected, ConsumerDisconnected
from consumer_host.testing import FakeClock

from .fakes import FakeTransport, delivery, scripted_consumer
from .helpers import EventLog, wait_until


def run_until(worker, predicate, what=""):
    stop = threading.Event()
    errors = []

    def target():
        try:
            worker.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        wait_until(lambda: predicate() or errors or not thread.is_alive(), what=what)
    finally:
        stop.set()
        thread.join(5)
    if errors:
        raise errors[0]


class TestReconnect:
    def test_connection_failures_back_off_then_connect(self):
        clock = FakeClock(auto_advance=True)
        fails = [BrokerUnavailable("refused")] * 4
        transport = FakeTransport(connect_results=[*fails, None])
        events = EventLog()
        c = scripted_consumer(transport, clock, events=events)
        run_until(c, lambda: events.of(ConsumerConnected), "a connection")
        # jitter at rand=0.5 is neutral: 0.5, 1, 2, 4 s
        assert clock.waits[:4] == [0.5, 1.0, 2.0, 4.0]
        assert len(events.of(ConsumerDisconnected)) == 4
        assert events.of(ConsumerConnected)[0].reconnect is False

    def test_the_broker_circuit_opens_holds_consumers_back_and_closes_after_a_probe(self):
        clock = FakeClock(auto_advance=True)
        events = EventLog()
        breaker = CircuitBreaker(
            "broker:test",
            threshold=3,
            window=60,
            cooldown=5,
            clock=clock,
            on_transition=lambda b, old, new: events(
                BreakerChanged(breaker=b.name, old=old, new=new, failures=0)
            ),
        )
        transport = FakeTransport(connect_results=[BrokerUnavailable("down")] * 3 + [None])
        c = scripted_consumer(transport, clock, breaker=breaker, events=events)
        run_until(c, lambda: events.of(ConsumerConnected), "a connection")
        assert [(e.old, e.new) for e in events.of(BreakerChanged)] == [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        assert [name for name, _ in transport.calls].count("connect") == 4
        assert breaker.state is BreakerState.CLOSED

    def test_a_lost_connection_reconnects_and_consumes_again(self):
        clock = FakeClock(auto_advance=True)
        transport = FakeTransport(batches=[[delivery()], BrokerUnavailable("reset"), [delivery()]])
        events = EventLog()
        c = scripted_consumer(transport, clock, events=events)
        seen_connected = []

        def two_acks():
            if len(transport.acked) == 2:
                seen_connected.append(c.connected)
                return True
            return False

        run_until(c, two_acks, "two acks")
        connects = events.of(ConsumerConnected)
        assert [e.reconnect for e in connects] == [False, True]
        assert seen_connected == [True]
        assert c.status()["connected"] is False, "disconnected once stopped"

    def test_a_permanent_broker_error_escapes_to_the_supervisor(self):
        clock = FakeClock(auto_advance=True)
        transport = FakeTransport(connect_results=[BrokerRefused("ACCESS_REFUSED")])
        c = scripted_consumer(transport, clock)
        with pytest.raises(BrokerRefused):
            run_until(c, lambda: False)
        assert transport.calls[-1] == ("close", None)


class TestMessages:
    def test_a_stop_requeues_fetched_but_unstarted_deliveries(self):
        clock = FakeClock(auto_advance=True)
        stop_after_first = threading.Event()
        batch = [delivery(b'{"n": 1}'), delivery(b'{"n": 2}'), delivery(b'{"n": 3}')]
        transport = FakeTransport(batches=[batch])
        stop = threading.Event()

        def handler(message):
            stop.set()  # the host asks to stop while this one is in flight
            stop_after_first.set()

        c = scripted_consumer(transport, clock, handler=handler)
        c.run(stop)
        assert [d.body for d in transport.acked] == [b'{"n": 1}']
        assert [d.body for d in transport.requeued] == [b'{"n": 2}', b'{"n": 3}']
        names = [name for name, _ in transport.calls]
        assert names[-2:] == ["stop_consuming", "close"]


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"prefetch": 0}, "prefetch"),
            ({"max_retries": -1}, "max_retries"),
            ({"accept": ("nonsense",)}, "accept"),
            ({"queue": ""}, "queue"),
            ({"retry_backoff_min": 0}, "backoff_min"),
            ({"max_body_bytes": 0}, "max_body_bytes"),
        ],
    )
    def test_bad_options_name_the_option(self, options, named):
        options = {"queue": "q", **options}
        with pytest.raises(ConfigError, match=named):
            ConsumerOptions(**options)


class TestStreamTrimming:
    def test_the_trim_floor_survives_a_group_whose_pending_entries_were_just_acked(self):
        """xinfo says one pending, xpending then finds none: trim to the next unread entry."""
        from consumer_host.transports.base import QueueSpec
        from consumer_host.transports.redis_streams import RedisStreamsTransport

        class Racing:
            trimmed_to = None

            def xinfo_groups(self, stream):
                return [{"name": b"g", "pending": 1, "last-delivered-id": b"1700000000000-4"}]

            def xpending(self, stream, group):
                return {"pending": 0, "min": None, "max": None, "consumers": []}

            def xtrim(self, stream, *, minid, approximate):
                self.trimmed_to = minid

        client = Racing()
        transport = RedisStreamsTransport(
            "redis+streams://h/0", QueueSpec(queue="q", dead_letter="q.dlq"), instance="q-1"
        )
        transport._trim(client)
        assert client.trimmed_to == "1700000000000-5"
