"""Build a redis-py client for what a URL names: one node, a Sentinel set, or a Redis Cluster.

Every client is made never to retry behind our back (see ``redis_common.make_client``): a
retried move whose first reply was lost would strand or double-deliver a message. A Sentinel
client asks the sentinels for the primary on every new connection (redis-py's
``SentinelConnectionPool``), so a reconnect after a failover reaches the promoted replica; a
cluster client follows MOVED/ASK itself (a redirected command was not run, so following is safe)
and reloads the slot map after a failover.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from .redis_urls import RedisUrl, parse_redis_url, typed_option


def client_options(connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
    return {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
    }


def build_client(
    url: str,
    *,
    connect_timeout: float,
    socket_timeout: float,
    client_name: str | None = None,
    **extra: Any,
) -> redis.Redis:
    """A client for ``url`` (any of the four schemes and three topologies).

    A cluster client is typed as ``redis.Redis``: it answers the same commands the transports
    use (scripts, lists, streams, sets) and routes each by its key.
    """
    parsed = parse_redis_url(url)
    options = client_options(connect_timeout, socket_timeout)
    if client_name is not None:
        options["client_name"] = client_name
    options.update(extra)
    if parsed.tls:
        options["ssl_cert_reqs"] = "required"  # a ?ssl_cert_reqs=none in the URL still wins
    if parsed.topology == "single":
        return redis.Redis.from_url(parsed.plain(), **options)
    options.update(_tls_and_query(parsed))
    if parsed.topology == "sentinel":
        return _sentinel_client(parsed, options)
    return _cluster_client(parsed, options)


def _tls_and_query(parsed: RedisUrl) -> dict[str, Any]:
    """The URL's own options (``ssl_cert_reqs``, ``ssl_ca_certs``, ...) as client keywords."""
    extra: dict[str, Any] = {"ssl": True} if parsed.tls else {}
    for name, value in parsed.options:
        extra[name] = typed_option(name, value)
    return extra


def _sentinel_client(parsed: RedisUrl, options: dict[str, Any]) -> redis.Redis:
    sentinel_options = dict(options)
    if parsed.sentinel_password:
        sentinel_options["password"] = parsed.sentinel_password
    sentinel = Sentinel(list(parsed.nodes), sentinel_kwargs=sentinel_options, **options)
    assert parsed.service is not None  # parse_redis_url guarantees it for a Sentinel URL
    client: redis.Redis = sentinel.master_for(
        parsed.service,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        # No PING on each new connection (redis-py's default too): the first command tells,
        # and a demoted primary's READONLY is a failover the consumer reconnects from.
        check_connection=False,
    )
    return client


def _cluster_client(parsed: RedisUrl, options: dict[str, Any]) -> redis.Redis:
    # Imported here: redis.cluster imports OpenTelemetry when it is installed, which a host
    # without a cluster URL must not pay for (tests/test_otel.py).
    from redis.cluster import ClusterNode, RedisCluster

    seeds = [ClusterNode(host, port) for host, port in parsed.nodes]  # type: ignore[no-untyped-call]
    cluster = RedisCluster(
        startup_nodes=seeds,
        username=parsed.username,
        password=parsed.password,
        # ``options`` carries a Retry of 0: MOVED/ASK are still followed (a redirected command
        # was not run), but a command that may have run is never sent again.
        **options,
    )
    return cast(redis.Redis, cluster)


def serving_node(client: redis.Redis, url: str, key: str) -> str | None:
    """``HOST:PORT`` of the primary that holds ``key`` (for ``/status`` and the logs): asked
    of the sentinels, or read from the cluster client's slot map; ``None`` on one node.

    Read once per connect: a failover ends the connection, and the reconnect reads it again.
    """
    topology = parse_redis_url(url).topology
    if topology == "single":
        return None
    if topology == "sentinel":
        host, port = client.connection_pool.get_master_address()  # type: ignore[attr-defined]
    else:
        node = client.get_node_from_key(key)  # type: ignore[attr-defined]
        host, port = node.host, node.port
    return f"{host}:{port}"
