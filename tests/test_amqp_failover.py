"""RabbitMQ failover URLs: the node rotation, the breaker's counting and the masked node in
events, with fakes and a fake clock; then every command against a failover URL whose first node
is down and whose second is the machine's RabbitMQ. The real 3-node cluster is in
tests/cluster/test_rabbitmq_cluster.py."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from consumer_host.consuming.connection import BrokerLink
from consumer_host.errors import BrokerRefused, BrokerUnavailable
from consumer_host.operating.logs import EventLogger, configure_logging
from consumer_host.supervision.backoff import BackoffPolicy
from consumer_host.supervision.breaker import BreakerState, CircuitBreaker
from consumer_host.supervision.events import ConsumerConnected, ConsumerDisconnected
from consumer_host.testing import FakeClock
from consumer_host.transports.amqp_nodes import SETTLE, NodeRotation, nodes_of
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.kombu_producer import KombuProducer
from consumer_host.transports.kombu_transport import KombuTransport
from tests.brokers import AMQP_URL, require
from tests.fakes import FakeTransport
from tests.helpers import EventLog, cli

CLUSTER = "amqp://u:SECRET1@n1:5672//;amqp://u:SECRET1@n2:5672//;amqp://u:SECRET1@n3:5672//"
DEAD = "amqp://guest:SECRET2@127.0.0.1:1//"
APPS = Path(__file__).parent / "apps"


class Nodes:
    """An ``attempt`` for NodeRotation.connect: the nodes named in ``down`` fail."""

    def __init__(self, *down: str, refused: str = "") -> None:
        self.down = set(down)
        self.refused = refused
        self.tried: list[str] = []

    def __call__(self, node: str) -> str:
        host = node.split("@")[1].split(":", maxsplit=1)[0]
        self.tried.append(host)
        if host == self.refused:
            raise BrokerRefused(f"cannot connect to {node}: ACCESS_REFUSED")
        if host in self.down:
            raise BrokerUnavailable(f"cannot connect to {node.replace('SECRET1', '***')}: down")
        return host


def test_a_failover_url_is_split_into_its_nodes():
    assert nodes_of(CLUSTER) == [
        "amqp://u:SECRET1@n1:5672//",
        "amqp://u:SECRET1@n2:5672//",
        "amqp://u:SECRET1@n3:5672//",
    ]
    assert nodes_of("amqp://h//") == ["amqp://h//"]
    assert nodes_of("amqp://a//; amqp://b//;") == ["amqp://a//", "amqp://b//"]


def test_a_failed_connect_moves_to_the_next_node_at_once():
    clock = FakeClock()
    rotation = NodeRotation(CLUSTER, clock=clock)
    nodes = Nodes("n1")
    assert rotation.connect(nodes) == "n2"
    assert nodes.tried == ["n1", "n2"]
    assert rotation.masked_node == "amqp://u:***@n2:5672//"
    assert clock.waits == []  # no pause between nodes


def test_after_a_loss_the_next_node_comes_first_and_the_lost_one_last_once_settled():
    clock = FakeClock(auto_advance=True)
    rotation = NodeRotation(CLUSTER, clock=clock)
    assert rotation.connect(Nodes()) == "n1"
    assert rotation.lost() is True  # go on at once
    assert rotation.node is None
    assert rotation.round() == [1, 2, 0]

    nodes = Nodes("n2", "n3")
    assert rotation.connect(nodes) == "n1"
    assert nodes.tried == ["n2", "n3", "n1"]
    assert clock.waits == [SETTLE]  # n1 was lost just now: trusted again only after settling


def test_a_round_in_which_no_node_answers_is_one_error_naming_each_node_masked():
    rotation = NodeRotation(CLUSTER, clock=FakeClock())
    with pytest.raises(BrokerUnavailable) as caught:
        rotation.connect(Nodes("n1", "n2", "n3"))
    text = str(caught.value)
    assert "no node of the cluster answered (3 tried)" in text
    for host in ("n1", "n2", "n3"):
        assert f"amqp://u:***@{host}:5672//" in text
    assert "SECRET1" not in text
    assert rotation.lost() is False  # nothing was connected: the caller backs off


def test_a_permanent_refusal_is_not_tried_on_the_other_nodes():
    rotation = NodeRotation(CLUSTER, clock=FakeClock())
    nodes = Nodes(refused="n1")
    with pytest.raises(BrokerRefused):
        rotation.connect(nodes)
    assert nodes.tried == ["n1"]


def test_nodes_that_accept_and_then_fail_stop_the_immediate_failovers_after_one_lap():
    clock = FakeClock(auto_advance=True)
    rotation = NodeRotation(CLUSTER, clock=clock)
    answers = []
    for _ in range(4):
        rotation.connect(Nodes())
        answers.append(rotation.lost())
    assert answers == [True, True, False, False]
    rotation.connect(Nodes())
    clock.advance(10)  # a connection that lived: a loss starts the count afresh
    assert rotation.lost() is True


def test_a_single_node_url_has_no_failover_and_no_settle_pause():
    clock = FakeClock()
    rotation = NodeRotation("amqp://u:p@n1//", clock=clock)
    rotation.connect(Nodes())
    assert rotation.lost() is False
    rotation.connect(Nodes())
    assert clock.waits == []


class FailingOverTransport(FakeTransport):
    """A FakeTransport on a cluster: a connection loss goes to the next node at once while
    ``at_once`` says so."""

    def __init__(self, *, at_once: list[bool], **kwargs) -> None:
        super().__init__(**kwargs)
        self.at_once = at_once
        self.node = "amqp://u:***@n1:5672//"

    def fail_over(self) -> bool:
        return self.at_once.pop(0)


def _link(transport, breaker, clock, events) -> BrokerLink:
    return BrokerLink(
        transport,
        breaker,
        backoff=BackoffPolicy(minimum=0.5, maximum=4.0),
        clock=clock,
        emit=events,
        instance="orders-1",
        worker="orders",
        queue="orders",
        broker="amqp://u:***@n1:5672//;...",
        rand=lambda: 0.5,
    )


def test_a_node_loss_costs_the_breaker_nothing_and_waits_no_backoff():
    clock = FakeClock(auto_advance=True)
    breaker = CircuitBreaker("broker", threshold=2, window=60, cooldown=15, clock=clock)
    events = EventLog()
    link = _link(FailingOverTransport(at_once=[True] * 10), breaker, clock, events)
    stop = threading.Event()
    for _ in range(10):
        assert link.open(stop, subscribe=True)
        link.lost(stop, BrokerUnavailable("cannot read from amqp://u:***@n1:5672//: reset"))
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert [e.delay for e in events.of(ConsumerDisconnected)] == [0.0] * 10
    assert {e.node for e in events.of(ConsumerDisconnected)} == {"amqp://u:***@n1:5672//"}
    assert {e.node for e in events.of(ConsumerConnected)} == {"amqp://u:***@n1:5672//"}


class CountingBreaker(CircuitBreaker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = 0

    def record_failure(self) -> None:
        self.recorded += 1
        super().record_failure()


def test_a_round_in_which_no_node_answered_counts_once_and_backs_off():
    clock = FakeClock(auto_advance=True)
    breaker = CountingBreaker("broker", threshold=5, window=60, cooldown=15, clock=clock)
    down = BrokerUnavailable("no node of the cluster answered (3 tried): ...")
    transport = FailingOverTransport(at_once=[False, False], connect_results=[down, down])
    events = EventLog()
    link = _link(transport, breaker, clock, events)
    assert link.open(threading.Event(), subscribe=True)
    assert breaker.recorded == 2  # two failed rounds, two failures: not one per node
    delays = [e.delay for e in events.of(ConsumerDisconnected)]
    assert len(delays) == 2
    assert all(d > 0 for d in delays)


def test_the_logged_disconnection_names_the_node_masked():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    EventLogger("shop")(
        ConsumerDisconnected(
            worker="orders",
            instance="orders-1",
            queue="orders",
            broker="amqp://u:***@n1//;amqp://u:***@n2//",
            node="amqp://u:***@n1//",
            error="cannot read from amqp://u:***@n1// queue 'orders': reset",
            delay=0.0,
        )
    )
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["event"] == "consumer_disconnected"
    assert line["node"] == "amqp://u:***@n1//"


# -- real broker: the first node of the URL is down, the second is the machine's RabbitMQ --------


def _with_dead_first() -> str:
    return f"{DEAD};{AMQP_URL}"


def test_the_consuming_transport_connects_to_the_second_node():
    require("amqp")
    queue = f"fo-{uuid.uuid4().hex[:8]}"
    transport = KombuTransport(
        _with_dead_first(), QueueSpec(queue=queue, dead_letter=f"{queue}.dlq")
    )
    try:
        transport.connect()
        assert transport.node is not None
        assert ":5672/" in transport.node or AMQP_URL.split("@")[-1] in transport.node
        assert "SECRET2" not in transport.node
        assert transport.depth() == {queue: 0, f"{queue}.dlq": 0}
    finally:
        transport.close()
        _delete(queue, f"{queue}.dlq")


def test_the_producer_publishes_through_the_second_node():
    require("amqp")
    queue = f"fo-{uuid.uuid4().hex[:8]}"
    producer = KombuProducer(_with_dead_first(), connect_timeout=2)
    try:
        producer.publish(
            queue,
            b"{}",
            content_type="application/json",
            content_encoding="utf-8",
            headers={},
            message_id="m1",
        )
        assert producer.node is not None
    finally:
        producer.close()
        _delete(queue)


@pytest.mark.parametrize("command", ["check", "publish", "dlq"])
def test_commands_work_with_the_first_node_down(command):
    require("amqp")
    queue = f"fo-{uuid.uuid4().hex[:8]}"
    env = {"ORDERS_QUEUE": queue, "ORDERS_LOG": os.devnull}
    app = str(APPS / "orders_app.py")
    args = {
        "check": ["check", app],
        "publish": ["publish", queue, '{"n": 1}'],
        "dlq": ["dlq", "list", app],
    }[command]
    try:
        result = cli(*args, "--broker", _with_dead_first(), env=env)
        assert result.returncode == 0, result.stderr
        assert "SECRET2" not in result.stdout + result.stderr
    finally:
        _delete(queue, f"{queue}.dlq")


def _delete(*queues: str) -> None:
    for queue in queues:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_queue", queue],
            capture_output=True,
            check=False,
            timeout=60,
        )


def test_one_node_shows_no_node():
    require("amqp")
    queue = f"fo-{uuid.uuid4().hex[:8]}"
    transport = KombuTransport(AMQP_URL, QueueSpec(queue=queue, dead_letter=f"{queue}.dlq"))
    try:
        transport.connect()
        assert transport.node is None  # /status and the connect lines name the broker already
    finally:
        transport.close()
        _delete(queue, f"{queue}.dlq")
