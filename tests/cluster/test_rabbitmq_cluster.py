"""A host on a real 3-node RabbitMQ 3.10 cluster rides out the loss of a node, losing nothing.

Each case publishes steadily from a thread (through consumer_host.Publisher on the failover URL,
itself failing over), kills a node with kill -9 mid-run, brings it back, counts every message in
the ledger (lost 0; duplicates allowed), measures the time to handle messages again, and ends
the host with SIGTERM (exit 0). The queue is a quorum queue, declared through the node the test
wants its leader on.
"""

from __future__ import annotations

import signal
from datetime import datetime

import pytest

from tests.chaos.harness import Ledger
from tests.helpers import wait_until

from .rabbitmq import (
    ClusterHost,
    RabbitCluster,
    SteadyPublisher,
    lost,
    record,
    resume_after,
    wait_all_handled,
)

#: The promise (README "Clusters"): handling again within 5 s of the connected node's death.
RESUME_WITHIN = 5.0


@pytest.fixture
def run(rabbit: RabbitCluster, tmp_path):
    """Per test: a fresh queue name and ledger; everything stopped and deleted afterwards."""
    ledger = Ledger()
    started: list[object] = []
    queue = f"cl-{ledger.key[-8:]}"

    def host(url: str, **env: object) -> ClusterHost:
        process = ClusterHost(url, queue, ledger, tmp_path, **env)
        started.append(process)
        return process

    def publisher(url: str, **extra: object) -> SteadyPublisher:
        thread = SteadyPublisher(url, queue, **extra)
        started.append(thread)
        thread.start()
        return thread

    yield queue, ledger, host, publisher
    for thing in started:
        if isinstance(thing, SteadyPublisher):
            thing.halt()
        elif isinstance(thing, ClusterHost):
            thing.stop()
    rabbit.ensure_all_up()
    rabbit.delete(queue, via=3)
    ledger.delete()
    ledger.client.delete(f"{ledger.key}:at")


def _connected_to(host: ClusterHost, port: int, count: int = 2) -> bool:
    return sum(f":{port}/" in node for node in host.connected_nodes()) >= count


def _finish(host: ClusterHost, ledger: Ledger, publisher: SteadyPublisher) -> list[int]:
    """Stop publishing, wait until every sent id was handled, SIGTERM: exit 0; the lost ids."""
    publisher.halt()
    try:
        wait_all_handled(ledger, publisher.sent)
    except AssertionError as exc:
        queue = publisher.queue
        out = RabbitCluster().run("ctl", "2", "-q", "list_queues", "name", "messages", "leader")
        depths = [line for line in out.splitlines() if line.startswith(queue)]
        missing = lost(ledger, publisher.sent)[:20]
        dead = [(e.get("reason"), e.get("error")) for e in host.events("message_dead_lettered")]
        raise AssertionError(f"{exc}; missing {missing}; {depths}; dead-lettered {dead}") from exc
    assert host.terminate() == 0, host.text()[-3000:]
    return lost(ledger, publisher.sent)


def test_the_connected_node_dies(rabbit: RabbitCluster, run):
    queue, ledger, host_for, publisher_for = run
    rabbit.declare_quorum(queue, on=2)  # the leader elsewhere: only the connection is lost
    host = host_for(rabbit.url(1, 2, 3))
    wait_until(lambda: _connected_to(host, 5701), timeout=30, what="both instances on node 1")
    publisher = publisher_for(rabbit.url(3, 2, 1))
    wait_until(lambda: ledger.handled() >= 50, timeout=30, what="messages flowing")

    killed_at = rabbit.kill(1)
    wait_until(lambda: publisher.published_after(killed_at + 0.5), timeout=15, what="publishing")
    wait_until(
        lambda: resume_handled(ledger, publisher, killed_at), timeout=30, what="handling again"
    )
    resumed = resume_after(ledger, publisher, killed_at)
    rabbit.revive(1)

    missing = _finish(host, ledger, publisher)
    nodes = host.connected_nodes()
    record("connected node killed", sent=publisher.sent, lost=len(missing), resume_s=resumed)
    assert missing == []
    assert resumed < RESUME_WITHIN
    assert any(":5702/" in n or ":5703/" in n for n in nodes[2:]), nodes
    assert all("guest:guest" not in n for n in nodes)  # each node named, password masked
    assert "guest:guest" not in host.text()


def resume_handled(ledger: Ledger, publisher: SteadyPublisher, moment: float) -> bool:
    try:
        resume_after(ledger, publisher, moment)
    except AssertionError:
        return False
    return True


def test_the_quorum_leaders_node_dies(rabbit: RabbitCluster, run):
    queue, ledger, host_for, publisher_for = run
    rabbit.declare_quorum(queue, on=2)
    assert rabbit.leader(queue, via=1) == 2
    host = host_for(rabbit.url(1, 2, 3))
    wait_until(lambda: _connected_to(host, 5701), timeout=30, what="both instances on node 1")
    publisher = publisher_for(rabbit.url(3, 1, 2))
    wait_until(lambda: ledger.handled() >= 50, timeout=30, what="messages flowing")

    killed_at = rabbit.kill(2)
    wait_until(
        lambda: resume_handled(ledger, publisher, killed_at), timeout=30, what="handling again"
    )
    resumed = resume_after(ledger, publisher, killed_at)
    rabbit.revive(2)

    missing = _finish(host, ledger, publisher)
    record("quorum leader's node killed", sent=publisher.sent, lost=len(missing), resume_s=resumed)
    assert missing == []
    assert resumed < RESUME_WITHIN


def test_the_first_node_of_the_url_is_down_at_start(rabbit: RabbitCluster, run):
    queue, ledger, host_for, publisher_for = run
    rabbit.declare_quorum(queue, on=2)
    rabbit.kill(1)
    host = host_for(rabbit.url(1, 2, 3))
    wait_until(lambda: len(host.connected_nodes()) >= 2, timeout=30, what="both instances up")
    ready = (
        max(_at(e) for e in host.events() if e.get("event") == "consumer_connected") - host.started
    )
    publisher = publisher_for(rabbit.url(1, 2, 3))  # the producer fails over too
    wait_until(lambda: publisher.sent >= 100, timeout=30, what="publishing past node 1")
    rabbit.revive(1)

    missing = _finish(host, ledger, publisher)
    record("first URL node down at start", sent=publisher.sent, lost=len(missing), ready_s=ready)
    assert missing == []
    assert all(":5701/" not in node for node in host.connected_nodes())
    assert ready < RESUME_WITHIN


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_a_node_dies_during_a_drain(rabbit: RabbitCluster, run):
    queue, ledger, host_for, publisher_for = run
    rabbit.declare_quorum(queue, on=2)
    host = host_for(rabbit.url(1, 2, 3), CLUSTER_WORK_MS=200, CLUSTER_PREFETCH=10)
    wait_until(lambda: _connected_to(host, 5701), timeout=30, what="both instances on node 1")
    publisher = publisher_for(rabbit.url(3, 2, 1))
    wait_until(lambda: ledger.handled() >= 10, timeout=30, what="messages flowing")
    publisher.halt()

    host.process.send_signal(signal.SIGTERM)
    rabbit.kill(1)  # while the in-flight handlers finish: their acks cannot reach node 1
    code = host.process.wait(60)
    rabbit.revive(1)
    # What the drain could not ack was given back by the cluster: a second host handles it.
    second = host_for(rabbit.url(2, 3, 1))
    wait_all_handled(ledger, publisher.sent)
    assert second.terminate() == 0, second.text()[-3000:]
    missing = lost(ledger, publisher.sent)
    record("node killed during a drain", sent=publisher.sent, lost=len(missing), exit_code=code)
    assert missing == []
    assert code == 0, host.text()[-3000:]


def test_retries_survive_the_loss_of_their_queues_node(rabbit: RabbitCluster, run):
    """Every fifth message fails once and is retried through ``<queue>.retry.200``. The host
    declares the retry and dead-letter queues through node 1, so their leaders start there; node
    1 dies mid-run. Quorum copies (at-least-once dead-lettering back to the queue) lose nothing.
    Issue 22, two defects this test found: (1) a publishing channel that met the retry queue
    while its leader was down was refused until node 1 came back (7-13 s; the consumer backed
    off at each refusal and handled again only 3.2-7.8 s after the kill), so a refusal now
    replaces the channel; (2) each refused original goes back to the queue, and RabbitMQ 3.10
    counts every give-back in ``x-delivery-count``: those must not add up to ``max_deliveries``
    (5) and send the message to the ``.dlq``. Classic copy queues on node 1 would refuse every
    retry until it returned."""
    queue, ledger, host_for, publisher_for = run
    rabbit.declare_quorum(queue, on=2)
    host = host_for(rabbit.url(1, 2, 3))
    wait_until(lambda: _connected_to(host, 5701), timeout=30, what="both instances on node 1")
    publisher = publisher_for(rabbit.url(3, 2, 1), fail=True)
    wait_until(lambda: ledger.handled() >= 30, timeout=30, what="retried messages handled")
    types = rabbit.run("ctl", "2", "-q", "list_queues", "name", "type", "--no-table-headers")
    kinds = dict(line.split() for line in types.splitlines() if line.startswith(queue))
    assert kinds == {queue: "quorum", f"{queue}.retry.200": "quorum", f"{queue}.dlq": "quorum"}
    assert rabbit.leader(f"{queue}.retry.200", via=2) == 1

    killed_at = rabbit.kill(1)
    wait_until(
        lambda: resume_handled(ledger, publisher, killed_at), timeout=30, what="handling again"
    )
    resumed = resume_after(ledger, publisher, killed_at)
    rabbit.revive(1)

    missing = _finish(host, ledger, publisher)
    refused = host.events("copy_refused")
    dead = [
        {k: e.get(k) for k in ("message_id", "reason", "attempts", "error")}
        for e in host.events("message_dead_lettered")
    ]
    record(
        "retry queues' node killed",
        sent=publisher.sent,
        lost=len(missing),
        resume_s=resumed,
        refused=len(refused),
    )
    assert missing == []
    assert dead == []
    assert rabbit.depth(f"{queue}.dlq", via=2) == 0
    assert resumed < RESUME_WITHIN
