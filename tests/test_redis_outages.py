"""Error replies Redis sends in passing (UNBLOCKED, NOGROUP): a consumer reconnects and goes on;
only replies that would fail again on every reconnect trip it."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from redis import exceptions as redis_errors

from consumer_host import BrokerFailingOver, BrokerRefused, BrokerUnavailable, Host
from consumer_host.supervision.events import ConsumerConnected, WorkerTripped
from consumer_host.transports.base import connection_name
from consumer_host.transports.broker import BrokerChoice
from consumer_host.transports.redis_common import translated

from .brokers import REDIS_URL, broker_tool, unique_queue
from .helpers import EventLog, wait_until

pytestmark = [pytest.mark.timeout(120)]

DEMOTED = (
    "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"
)


@pytest.mark.parametrize(
    "reply",
    [
        DEMOTED,
        "UNBLOCKED the stream key no longer exists",
        "UNBLOCKED client unblocked via CLIENT UNBLOCK",
    ],
)
def test_an_unblocked_read_is_a_failover(reply):
    """What a demoted primary sends its blocked readers: the READONLY of a waiting
    connection, retried at a failover's pace (redis_failover says why for every cause)."""
    with pytest.raises(BrokerFailingOver), translated("read from", "redis://h/0", "orders"):
        raise redis_errors.ResponseError(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "NOGROUP No such key 'orders' or consumer group 'orders' in XREADGROUP with GROUP option",
        "Error running script (call to f_1234): @user_script:9: NOGROUP No such key 'orders'",
    ],
)
def test_a_group_gone_is_an_outage_not_a_refusal(reply):
    with pytest.raises(BrokerUnavailable) as caught, translated("read", "redis://h/0", "q"):
        raise redis_errors.ResponseError(reply)
    assert not isinstance(caught.value, (BrokerFailingOver, BrokerRefused))


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR unknown command 'BLMOVE'",
        "BUSYGROUP Consumer Group name already exists",  # not BUSY: no outage
        "ERR The ID specified in XADD is equal or smaller than the target stream top item",
    ],
)
def test_other_replies_stay_permanent(reply):
    with pytest.raises(BrokerRefused), translated("read", "redis://h/0", "q"):
        raise redis_errors.ResponseError(reply)


@pytest.fixture(params=["redis", "streams"])
def redis_kind(request):
    yield from broker_tool(request.param)


class Running:
    """A host with one consumer (pool 1) on a queue of its own, recording what it handled."""

    def __init__(self, tool) -> None:
        self.queue = unique_queue("out")
        tool.queues.add(self.queue)
        self.tool = tool
        self.name = f"out-{uuid.uuid4().hex[:8]}"
        self.seen: list[int] = []
        self.events = EventLog()
        self.host = Host("shop")
        self.host.use_broker(BrokerChoice(tool.url, "test"))
        self.host.subscribe(self.events)
        lock = threading.Lock()

        @self.host.consumer(self.name, queue=self.queue, pool=1, prefetch=5)
        def handle(message):
            with lock:
                self.seen.append(message.body["n"])

    def handled(self, n: int) -> None:
        self.tool.publish(self.queue, {"n": n})
        wait_until(lambda: n in self.seen, timeout=30, what=f"message {n} handled")

    def reconnects(self) -> int:
        return sum(e.reconnect for e in self.events.of(ConsumerConnected))

    def blocked_reads(self, admin: redis.Redis) -> list[int]:
        """CLIENT IDs of this consumer's connections now blocked in a read: its own, by name."""
        own = connection_name(self.name)  # the instance is the name, or name-<n> in a pool
        return [
            int(c["id"])
            for c in admin.client_list()
            if c.get("name", "").startswith(own) and c.get("cmd") in ("xreadgroup", "blmove")
        ]


@pytest.fixture
def admin():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def test_a_read_unblocked_with_an_error_reconnects_and_goes_on(redis_kind, admin):
    running = Running(redis_kind)
    running.host.start()
    try:
        running.handled(1)
        wait_until(lambda: running.blocked_reads(admin), what="the consumer blocked in a read")
        before = running.reconnects()
        unblocked = [admin.client_unblock(i, error=True) for i in running.blocked_reads(admin)]
        assert any(unblocked), "a blocked read was ended with an error"
        wait_until(lambda: running.reconnects() > before, timeout=30, what="a reconnect")
        running.handled(2)
    finally:
        assert running.host.stop(10) == ()
    assert running.events.of(WorkerTripped) == []


def test_a_destroyed_group_is_created_again_and_new_entries_are_handled(admin):
    tool = next(broker_tool("streams"))
    running = Running(tool)
    running.host.start()
    try:
        running.handled(1)
        wait_until(lambda: running.blocked_reads(admin), what="the consumer blocked in a read")
        before = running.reconnects()
        assert admin.xgroup_destroy(running.queue, running.queue) == 1
        wait_until(lambda: running.reconnects() > before, timeout=30, what="a reconnect")
        running.handled(2)
        groups = [g["name"] for g in admin.xinfo_groups(running.queue)]
        assert groups == [running.queue.encode()]
    finally:
        assert running.host.stop(10) == ()
        tool.close()
    assert running.events.of(WorkerTripped) == []
    # The group came back from id 0: the first entry, acked by the old group, came again.
    assert sorted(set(running.seen)) == [1, 2]
