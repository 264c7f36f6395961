"""Two live hosts with one host name and pid (PID 1 containers on a host network, compose
replicas with one ``hostname:``) are two consumers to Redis, and take nothing from each other."""

from __future__ import annotations

import types

import pytest

from consumer_host.transports import redis_common
from consumer_host.transports.redis_lists import RedisListTransport
from consumer_host.transports.redis_streams import RedisStreamsTransport

from . import redis_transports
from .brokers import STREAMS_URL
from .helpers import wait_until
from .redis_transports import fetch_until, made_by
from .test_transport_redis_lists import push
from .test_transport_redis_streams import add, pending_on

queue = redis_transports.queue
client = redis_transports.client


@pytest.fixture(autouse=True)
def one_host_one_pid(monkeypatch):
    """Every transport of the test runs on host ``web`` as PID 1, as twin containers would."""
    monkeypatch.setattr(redis_common, "socket", types.SimpleNamespace(gethostname=lambda: "web"))
    monkeypatch.setattr(redis_common, "os", types.SimpleNamespace(getpid=lambda: 1))


@pytest.fixture
def lists(redis_broker):
    yield from made_by(RedisListTransport, redis_broker.url)


@pytest.fixture
def streams(redis_broker):
    yield from made_by(RedisStreamsTransport, STREAMS_URL)


def test_twin_list_consumers_have_their_own_ids_and_keep_them_across_reconnects(queue, lists):
    first = lists(queue, instance="orders-0")
    twin = lists(queue, instance="orders-0")
    assert first.id.startswith("orders-0@web-1-")
    assert first.id != twin.id
    assert (first.keys_processing, first.keys_alive) != (twin.keys_processing, twin.keys_alive)
    before = first.id, first.keys_processing
    first.discard()
    first.connect()
    assert (first.id, first.keys_processing) == before, "failed acks are resent to the same list"


def test_a_twin_list_consumer_starting_takes_nothing_in_flight(client, queue, lists):
    push(client, queue, {"n": 1})
    first = lists(queue, instance="orders-0")
    (held,) = fetch_until(first, 1)
    twin = lists(queue, instance="orders-0")  # its start recovers its own list: not ours
    assert twin.fetch(0.05) == []
    assert client.lrange(first.keys_processing, 0, -1) == [held.handle]
    first.ack(held)
    first.fetch(0)  # the ack goes out before the next fetch
    assert client.llen(first.keys_processing) == 0
    assert client.llen(queue) == 0


def test_a_restarted_twin_gets_a_dead_ones_messages_back_by_the_sweep(client, queue, lists):
    """Crash recovery no longer depends on the next process having the dead one's id."""
    push(client, queue, {"n": 1})
    dead = lists(queue, instance="orders-0", alive_ttl=0.3, recover_interval=0.05)
    (held,) = fetch_until(dead, 1)
    dead.discard()  # SIGKILL: no close, the keeper stops
    restarted = lists(queue, instance="orders-0", alive_ttl=0.3, recover_interval=0.05)
    wait_until(lambda: not client.exists(dead.keys_alive), what="the dead one's alive key gone")
    (again,) = fetch_until(restarted, 1)
    assert again.body == held.body
    assert again.delivery_count == 2
    assert not client.sismember(restarted.keys_consumers, dead.id)


def test_twin_stream_consumers_have_their_own_names_and_pending_entries(client, queue, streams):
    (entry,) = add(client, queue, {"n": 1})
    first = streams(queue, instance="orders-0")
    (held,) = fetch_until(first, 1)
    twin = streams(queue, instance="orders-0")
    assert first.consumer != twin.consumer
    assert twin.fetch(0.05) == []
    assert pending_on(client, queue, first.consumer) == [entry]
    assert pending_on(client, queue, twin.consumer) == []
    # The twin owns nothing and leaves the group; what the first holds stays its own.
    twin.close()
    names = [c["name"].decode() for c in client.xinfo_consumers(queue, queue)]
    assert names == [first.consumer]
    first.ack(held)
    first.fetch(0)
    assert pending_on(client, queue, first.consumer) == []
