"""Fast unit tests for Redis Sentinel and Redis Cluster support: URL forms, the clients built
from them, error classification by exception class, and the failover pace (fake clock).
The real failovers are in tests/cluster/."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

from consumer_host import BrokerFailingOver, BrokerRefused, BrokerUnavailable, ConfigError, Reject
from consumer_host.consuming.connection import BrokerLink
from consumer_host.consuming.decoding import BadMessage
from consumer_host.consuming.failover_pace import FailoverPace
from consumer_host.consuming.options import ConsumerOptions
from consumer_host.consuming.settlement import Settlement
from consumer_host.supervision.backoff import BackoffPolicy
from consumer_host.supervision.breaker import BreakerState, CircuitBreaker
from consumer_host.testing import FakeClock
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.broker import dead_letter_name, validate_url
from consumer_host.transports.redis_clients import build_client, serving_node
from consumer_host.transports.redis_common import translated
from consumer_host.transports.redis_failover import is_replicated
from consumer_host.transports.redis_keys import cluster_spec, dead_letter_key, own_prefix
from consumer_host.transports.redis_urls import parse_redis_url, typed_option
from tests.fakes import FakeTransport, delivery
from tests.helpers import cli

CLUSTER = "redis://127.0.0.1:7001,127.0.0.1:7002/0?cluster=true"
SENTINEL = "redis://:s3cret@127.0.0.1:26401,127.0.0.1:26402,[::1]:26403/2?sentinel=chmain"


@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+streams", "rediss+streams"])
def test_sentinel_urls_of_every_scheme(scheme):
    parsed = parse_redis_url(SENTINEL.replace("redis://", f"{scheme}://"))
    assert parsed.topology == "sentinel"
    assert parsed.service == "chmain"
    assert parsed.nodes == (("127.0.0.1", 26401), ("127.0.0.1", 26402), ("::1", 26403))
    assert parsed.db == 2
    assert parsed.password == "s3cret"  # noqa: S105 (a test URL's password)
    assert parsed.username is None
    assert parsed.tls is scheme.startswith("rediss")
    assert parsed.streams is scheme.endswith("+streams")


def test_sentinel_password_and_user():
    parsed = parse_redis_url("redis://app:pw@h1,h2:5000/0?sentinel=s&sentinel_password=sp")
    assert (parsed.username, parsed.password, parsed.sentinel_password) == ("app", "pw", "sp")
    assert parsed.nodes == (("h1", 26379), ("h2", 5000))
    assert parsed.options == ()
    assert "pw" not in repr(parsed)
    assert "sp" not in repr(parsed)


@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+streams", "rediss+streams"])
def test_cluster_urls_of_every_scheme(scheme):
    parsed = parse_redis_url(f"{scheme}://127.0.0.1:7001,127.0.0.1:7002/0?cluster=true")
    assert parsed.topology == "cluster"
    assert parsed.nodes == (("127.0.0.1", 7001), ("127.0.0.1", 7002))


def test_a_single_node_url_reads_as_before():
    parsed = parse_redis_url("redis+streams://u:p@h:6380/3?ssl_cert_reqs=none")
    assert parsed.topology == "single"
    assert parsed.plain() == "redis://u:p@h:6380/3?ssl_cert_reqs=none"
    assert parsed.options == (("ssl_cert_reqs", "none"),)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h1:1,h2:2/0", "needs ?sentinel=SERVICE"),
        ("redis://h1:1/0?sentinel=", "name of the Sentinel service"),
        ("redis://h1:1/0?sentinel=s&cluster=true", "not both"),
        ("redis://h1:1/3?cluster=true", "only database 0"),
        ("redis://h1:x/0?cluster=true", "not a number"),
        ("redis://h1:99999/0?cluster=true", "out of range"),
        ("http://h1/0", "not a Redis URL"),
        ("redis:///0?cluster=true", "at least one HOST:PORT"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, says):
    with pytest.raises(ConfigError, match=says.replace("?", r"\?")):
        parse_redis_url(url)


def test_a_bad_url_never_shows_its_password():
    with pytest.raises(ConfigError) as caught:
        parse_redis_url("http://user:hunter2@h/0")
    assert "hunter2" not in str(caught.value)


def test_clients_for_each_topology_connect_lazily():
    single = build_client("redis://127.0.0.1:1/0", connect_timeout=1, socket_timeout=1)
    assert single.connection_pool.connection_kwargs["port"] == 1
    sentinel = build_client(SENTINEL, connect_timeout=1, socket_timeout=1)
    pool = sentinel.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "chmain"
    assert pool.connection_kwargs["password"] == "s3cret"  # noqa: S105
    assert pool.connection_kwargs["db"] == 2
    # The cluster client loads its slot map at once: with no node there it fails, and says so.
    with pytest.raises(redis_errors.RedisClusterException):
        build_client("redis://127.0.0.1:1/0?cluster=true", connect_timeout=0.2, socket_timeout=1)
    assert RedisCluster  # the class the cluster client is built from


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),
        redis_errors.ClusterDownError("The cluster is down"),
        redis_errors.MasterDownError("Link with MASTER is down"),
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        redis_errors.MovedError("3999 127.0.0.1:7002"),
        redis_errors.AskError("3999 127.0.0.1:7002"),
        redis_errors.SlotNotCoveredError("slot 3999 not covered"),
        MasterNotFoundError("No master found for 'chmain'"),
        redis_errors.ResponseError("Error running script: READONLY You can't write"),
    ],
)
def test_failover_errors_are_classified_by_class(error):
    with pytest.raises(BrokerFailingOver), translated("read from", "redis://h/0", "orders"):
        raise error


def test_a_lost_connection_is_a_failover_only_on_a_replicated_broker():
    lost = redis_errors.ConnectionError("Connection refused")
    with pytest.raises(BrokerUnavailable) as single, translated("read", "redis://h/0", "q"):
        raise lost
    assert not isinstance(single.value, BrokerFailingOver)
    with pytest.raises(BrokerFailingOver), translated("read", SENTINEL, "q"):
        raise lost


def test_other_errors_keep_their_meaning():
    with pytest.raises(BrokerRefused), translated("read", SENTINEL, "q"):
        raise redis_errors.AuthenticationError("invalid password")
    with pytest.raises(BrokerRefused), translated("read", SENTINEL, "q"):
        raise redis_errors.ResponseError("WRONGTYPE Operation against a key")
    with pytest.raises(BrokerUnavailable) as caught, translated("read", SENTINEL, "q"):
        raise redis_errors.ResponseError("OOM command not allowed")
    assert not isinstance(caught.value, BrokerFailingOver)
    with pytest.raises(BrokerRefused) as caught, translated("read", SENTINEL, "q"):
        raise redis_errors.AuthenticationError("invalid password")
    assert "s3cret" not in str(caught.value)


def _link(transport, clock, breaker):
    return BrokerLink(
        transport,
        breaker,
        backoff=BackoffPolicy(minimum=0.5, maximum=4.0, jitter=0.0),
        clock=clock,
        emit=lambda event: None,
        instance="orders-0",
        worker="orders",
        queue="orders",
        broker="redis",
    )


def test_a_failover_is_retried_fast_and_never_opens_the_circuit():
    clock = FakeClock(auto_advance=True)
    breaker = CircuitBreaker("redis", threshold=5, cooldown=15.0, clock=clock)
    # A promotion of ~5 s: twenty refusals at 0.25 s, then the new primary answers.
    failing = [BrokerFailingOver("CLUSTERDOWN") for _ in range(20)]
    link = _link(FakeTransport(connect_results=[*failing, None]), clock, breaker)
    assert link.open(threading.Event(), subscribe=False)
    assert breaker.state is BreakerState.CLOSED
    assert clock.waits == [0.25] * 20
    assert clock.now() == pytest.approx(5.0)


def test_ordinary_losses_still_back_off_and_open_the_circuit():
    clock = FakeClock(auto_advance=True)
    breaker = CircuitBreaker("redis", threshold=5, cooldown=15.0, clock=clock)
    refused = [BrokerUnavailable("refused") for _ in range(5)]
    link = _link(FakeTransport(connect_results=[*refused, None]), clock, breaker)
    assert link.open(threading.Event(), subscribe=False)
    assert clock.waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert breaker.state is BreakerState.CLOSED  # the probe after the cool-down closed it
    assert clock.now() >= 15.0


def test_a_failover_that_lasts_too_long_counts_as_failures():
    clock = FakeClock(auto_advance=True)
    transitions = []
    breaker = CircuitBreaker(
        "redis",
        threshold=5,
        cooldown=15.0,
        clock=clock,
        on_transition=lambda _breaker, old, new: transitions.append(new),
    )
    endless = [BrokerFailingOver("MASTERDOWN") for _ in range(200)]
    link = _link(FakeTransport(connect_results=[*endless, None]), clock, breaker)
    assert link.open(threading.Event(), subscribe=False)
    # 30 s of fast retries (121 of them), then ordinary backoff and the circuit.
    assert clock.waits[:121] == [0.25] * 121
    assert clock.waits[121:125] == [0.5, 1.0, 2.0, 4.0]
    assert BreakerState.OPEN in transitions


def test_single_node_and_sentinel_keep_their_key_names():
    for url in ("redis://h/0", SENTINEL):
        assert own_prefix(url, "orders") == "consumer-host:orders:"
        assert dead_letter_key(url, "orders", "orders.dlq") == "orders.dlq"


def test_a_cluster_keeps_a_queue_s_keys_in_the_queue_s_slot():
    url = "redis+streams://127.0.0.1:7001/0?cluster=true"
    prefix = own_prefix(url, "orders")
    assert prefix == "consumer-host:{orders}:"
    named = cluster_spec(url, QueueSpec(queue="orders", dead_letter="orders.dlq"))
    assert named.dead_letter == "{orders}.dlq"
    slot = key_slot(b"orders")
    for key in (f"{prefix}processing:c-1@h", f"{prefix}delayed", named.dead_letter):
        assert key_slot(key.encode()) == slot, key
    # A dead-letter name the user chose is theirs: kept as given.
    assert dead_letter_key(url, "orders", "failed-orders") == "failed-orders"


def test_the_dead_letter_queue_is_named_as_it_really_is():
    """Issue 22: on a Redis Cluster the default ``orders.dlq`` lives at ``{orders}.dlq``, and
    that is the name people are shown; elsewhere the name stays as configured."""
    cluster = "redis://127.0.0.1:7001/0?cluster=true"
    assert dead_letter_name(cluster, "orders", "orders.dlq") == "{orders}.dlq"
    assert dead_letter_name("rediss+streams://c1:7001/0?cluster=1", "q", "q.dlq") == "{q}.dlq"
    assert dead_letter_name(cluster, "orders", "failed") == "failed"
    for url in ("redis://h/0", SENTINEL, "amqp://u:p@n1//;amqp://u:p@n2//", "memory://"):
        assert dead_letter_name(url, "orders", "orders.dlq") == "orders.dlq"


def test_the_dlq_commands_name_the_cluster_s_real_key():
    app = str(Path(__file__).parent / "apps" / "orders_app.py")
    cluster = "redis://127.0.0.1:7001/0?cluster=true"
    done = cli("dlq", "purge", app, "--consumer", "orders", "--broker", cluster)
    assert done.returncode == 2  # refused without --yes, before any broker is asked
    assert "'{orders}.dlq'" in done.stderr


class _Said:
    """A logger that keeps the lines it is told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def error(self, event: str, **fields) -> None:
        self.lines.append((event, fields))

    warning = error


def _logged_dead_letters(url: str, options: ConsumerOptions) -> list[tuple[str, str]]:
    """The events and dead-letter names a consumer's Settlement logs on ``url``, its own
    transport built but never connected: one handler rejection, one bad input."""
    transport = options.transport_for(url, instance="naming")
    moved: list[dict] = []
    transport.dead_letter = lambda _delivery, headers: moved.append(headers)  # no broker here
    log = _Said()
    settlement = Settlement(transport, options, log=log, wall=lambda: 0.0, observe=lambda _s: None)
    settlement.dead_letter(delivery(), Reject("no"), 1, reason="rejected by handler")
    settlement.reject_bad_input(delivery(b"{"), BadMessage("undecodable", "not JSON"))
    assert len(moved) == 2
    return [(event, fields["dead_letter_queue"]) for event, fields in log.lines]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (CLUSTER, "{orders}.dlq"),
        ("rediss+streams://127.0.0.1:7001/0?cluster=true", "{orders}.dlq"),
        ("redis://127.0.0.1:6379/0", "orders.dlq"),
        (SENTINEL, "orders.dlq"),
        ("amqp://guest:guest@127.0.0.1:5672//", "orders.dlq"),
    ],
)
def test_dead_letter_log_lines_name_the_real_key(url, shown):
    assert _logged_dead_letters(url, ConsumerOptions(queue="orders")) == [
        ("message_dead_lettered", shown),
        ("message_rejected", shown),
    ]


def test_a_dead_letter_name_the_user_chose_is_logged_as_chosen_on_a_cluster():
    options = ConsumerOptions(queue="orders", dead_letter="{orders}.failed")
    assert {name for _event, name in _logged_dead_letters(CLUSTER, options)} == {"{orders}.failed"}


def test_the_cli_refuses_a_bad_cluster_url_in_one_line():
    done = cli("publish", "--broker", "redis://:hunter2@h1:1,h2:2/0", "q", "{}")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "?sentinel=SERVICE" in line
    assert "hunter2" not in line


def test_broker_validation_accepts_every_redis_form():
    for url in (SENTINEL, "rediss+streams://c1:7001,c2:7002/0?cluster=true", "redis://h/0"):
        assert validate_url(url) == url


class _Primary:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def get_master_address(self) -> tuple[str, int]:
        return self.host, self.port


class _SentinelClient:
    def __init__(self) -> None:
        self.connection_pool = _Primary("10.0.0.2", 6402)


class _ClusterClient:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_node_from_key(self, key: str) -> _Primary:
        self.asked.append(key)
        return _Primary("10.0.0.3", 7003 if key_slot(key.encode()) > 8000 else 7001)


def test_the_serving_node_is_the_primary_that_holds_the_queue():
    assert serving_node(object(), "redis://127.0.0.1:6379/0", "orders") is None  # type: ignore[arg-type]
    sentinel = "redis://s1:26401,s2:26402/0?sentinel=mymaster"
    assert serving_node(_SentinelClient(), sentinel, "orders") == "10.0.0.2:6402"  # type: ignore[arg-type]
    cluster, queue = _ClusterClient(), "{orders}"
    expected = 7003 if key_slot(b"{orders}") > 8000 else 7001
    assert serving_node(cluster, "redis://c1:7001?cluster=true", queue) == f"10.0.0.3:{expected}"  # type: ignore[arg-type]
    assert cluster.asked == [queue]


def test_a_dead_letter_key_outside_the_queues_slot_is_refused_on_a_cluster():
    spec = QueueSpec(queue="orders", dead_letter="orders-failed")
    with pytest.raises(ConfigError, match=r"\{orders\}\.failed"):
        cluster_spec("redis://c1:7001?cluster=true", spec)
    tagged = QueueSpec(queue="orders", dead_letter="{orders}.failed")
    assert cluster_spec("redis://c1:7001?cluster=true", tagged) == tagged
    assert cluster_spec(SENTINEL, spec) == spec  # one keyspace: any name will do


def test_a_cluster_clients_own_faults_are_outages_not_failovers():
    cross_slot = redis_errors.RedisClusterException("all keys must map to the same key slot")
    with pytest.raises(BrokerUnavailable) as caught, translated("read", CLUSTER, "q"):
        raise cross_slot
    assert not isinstance(caught.value, BrokerFailingOver)
    assert not is_replicated("redis://h:6379/0?cluster=false")
    assert is_replicated(CLUSTER)
    assert is_replicated(SENTINEL)


def test_a_failover_that_reconnects_and_fails_at_once_still_runs_out_of_grace():
    clock = FakeClock()
    pace = FailoverPace(clock)
    failing = BrokerFailingOver("CLUSTERDOWN")
    assert pace.delay(failing) == 0.25
    for _ in range(31):  # connected, then the same error within the second, for 31 s
        clock.advance(1.0)
        pace.connected()
        if pace.delay(failing) is None:
            break
    assert clock.now() == pytest.approx(31.0)
    pace.connected()
    clock.advance(5.0)  # a connection that held ends the failover: the next one starts afresh
    assert pace.delay(failing) == 0.25


def test_a_failover_during_a_half_open_probe_reports_back():
    clock = FakeClock(auto_advance=True)
    breaker = CircuitBreaker("redis", threshold=1, cooldown=15.0, clock=clock)
    breaker.record_failure()
    clock.advance(15.0)
    assert breaker.allow()  # this consumer's probe
    link = _link(FakeTransport(), clock, breaker)
    link.lost(threading.Event(), BrokerFailingOver("CLUSTERDOWN"))
    assert breaker.state is BreakerState.OPEN  # counted: the probe slot is free again


def test_a_name_alone_before_the_at_is_a_user_on_every_topology():
    for url in (
        "redis://ann@h:6379/0",
        "redis://ann@s1:26401/0?sentinel=m",
        "redis://ann@c1?cluster=true",
    ):
        parsed = parse_redis_url(url)
        assert (parsed.username, parsed.password) == ("ann", None), url
    assert parse_redis_url("redis://:s3cret@s1/0?sentinel=m").password == "s3cret"  # noqa: S105


def test_url_options_are_typed_as_redis_py_types_them_and_checked_at_once():
    parsed = parse_redis_url(f"{SENTINEL}&health_check_interval=5&socket_keepalive=yes")
    options = dict(parsed.options)
    assert typed_option("health_check_interval", options["health_check_interval"]) == 5
    assert typed_option("socket_keepalive", options["socket_keepalive"]) is True
    assert typed_option("ssl_ca_certs", "/etc/ca.pem") == "/etc/ca.pem"
    with pytest.raises(ConfigError, match="health_check_interval"):
        parse_redis_url(f"{CLUSTER}&health_check_interval=often")
