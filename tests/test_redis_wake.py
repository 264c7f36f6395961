"""Woken reads where the server refuses ``CLIENT ID``/``CLIENT UNBLOCK`` to the user (an ACL
without ``@dangerous``): the transport polls instead of failing to connect, and still consumes."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from consumer_host.transports.base import QueueSpec
from consumer_host.transports.redis_lists import RedisListTransport
from consumer_host.transports.redis_streams import RedisStreamsTransport
from consumer_host.transports.redis_wake import open_reader

from .brokers import REDIS_URL, STREAMS_URL, broker_tool, unique_queue
from .redis_transports import fetch_until


@pytest.fixture
def restricted_user():
    """A Redis user of this test's own that may not run the @dangerous commands."""
    admin = redis.Redis.from_url(REDIS_URL)
    name, password = f"ch-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command(
        "ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all", "-@dangerous"
    )
    yield name, password
    admin.execute_command("ACL", "DELUSER", name)
    admin.close()


def as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 6379}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_open_reader_says_none_where_a_wake_is_not_allowed(restricted_user):
    url = as_user(REDIS_URL, *restricted_user)
    assert open_reader(url, connect_timeout=2.0, socket_timeout=5.0) is None
    reader = open_reader(REDIS_URL, connect_timeout=2.0, socket_timeout=5.0)
    assert reader is not None
    reader.close()


@pytest.fixture(params=["redis", "streams"])
def tool(request):
    yield from broker_tool(request.param)


def test_a_user_without_client_unblock_polls_and_consumes(restricted_user, tool):
    transport_class, base_url = (
        (RedisListTransport, REDIS_URL)
        if tool.kind == "redis"
        else (RedisStreamsTransport, STREAMS_URL)
    )
    queue = unique_queue("wake")
    tool.queues.add(queue)
    spec = QueueSpec(queue=queue, dead_letter=f"{queue}.dlq", prefetch=10)
    transport = transport_class(as_user(base_url, *restricted_user), spec, instance="wake-0")
    try:
        transport.connect()
        transport.start_consuming()
        assert transport.can_wake is False
        tool.publish(queue, {"id": 1})
        [delivery] = fetch_until(transport, 1)
        transport.ack(delivery)
    finally:
        transport.close()
