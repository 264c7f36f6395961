"""Read a Redis URL in all its forms: one node, a Sentinel set, or a Redis Cluster.

``redis://[[user]:password@]HOST:PORT[,HOST:PORT...]/DB?sentinel=SERVICE`` names the sentinels
of a set (the password is the data nodes'; ``sentinel_password=`` for sentinels that need one);
``...?cluster=true`` names seed nodes of a Redis Cluster (any node will do). Both forms work with
``rediss://``, ``redis+streams://`` and ``rediss+streams://``. A URL with neither option is one
node and goes to redis-py's ``from_url`` unchanged, so every existing deployment reads the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

from consumer_host.errors import ConfigError
from consumer_host.redaction import redact_text

Topology = Literal["single", "sentinel", "cluster"]
SCHEMES = ("redis", "rediss", "redis+streams", "rediss+streams")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RedisUrl:
    """What a Redis URL says. ``nodes`` are sentinels for a Sentinel set, seeds for a cluster."""

    url: str = field(repr=False)
    scheme: str
    topology: Topology
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()
    """The query options left over for redis-py (``ssl_cert_reqs``, timeouts, ...)."""

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    @property
    def streams(self) -> bool:
        return self.scheme.endswith("+streams")

    def plain(self) -> str:
        """The URL without ``+streams``: what redis-py's ``from_url`` takes for one node."""
        scheme, sep, rest = self.url.partition("://")
        return f"{scheme.replace('+streams', '')}{sep}{rest}"


def parse_redis_url(url: str) -> RedisUrl:
    """Parse ``url``; a malformed one raises ``ConfigError`` naming the fault, never a secret."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"not a Redis URL: {redact_text(url)!r} (expected one of "
            f"{', '.join(s + '://' for s in SCHEMES)})"
        )
    scheme = scheme.lower()
    rest, _, query = rest.partition("?")
    rest, _, _fragment = rest.partition("#")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        # ``redis://name@host`` names a user, as redis-py and kombu read it on one node; a
        # password alone is ``redis://:secret@host``.
        password = unquote(secret) if colon else None
    options = parse_qsl(query, keep_blank_values=True)
    taken = dict(options)
    service = taken.pop("sentinel", None)
    sentinel_password = taken.pop("sentinel_password", None)
    cluster = taken.pop("cluster", "").lower() in _TRUE
    if service is not None and cluster:
        raise ConfigError("a Redis URL names either ?sentinel=SERVICE or ?cluster=true, not both")
    if service is not None and not service:
        raise ConfigError("?sentinel= needs the name of the Sentinel service (e.g. mymaster)")
    topology: Topology = "sentinel" if service else "cluster" if cluster else "single"
    nodes = tuple(_node(part, topology) for part in hosts.split(",")) if hosts else ()
    if topology == "single" and len(nodes) > 1:
        raise ConfigError(
            "a Redis URL with several hosts needs ?sentinel=SERVICE (the hosts are sentinels) "
            "or ?cluster=true (the hosts are cluster seeds)"
        )
    if topology != "single" and not nodes:
        raise ConfigError(f"a {topology} Redis URL needs at least one HOST:PORT")
    db = _db(path)
    if topology == "cluster" and db != 0:
        raise ConfigError("a Redis Cluster has only database 0: use /0 (or no path)")
    return RedisUrl(
        url=url,
        scheme=scheme,
        topology=topology,
        nodes=nodes,
        db=db,
        username=username,
        password=password,
        service=service,
        sentinel_password=sentinel_password,
        options=tuple((name, _checked(name, value)) for name, value in taken.items()),
    )


def _node(part: str, topology: Topology) -> tuple[str, int]:
    default = 26379 if topology == "sentinel" else 6379
    part = part.strip()
    if part.startswith("["):  # [::1]:6379
        if "]" not in part:
            raise ConfigError("a Redis URL has an IPv6 address without its closing ']'")
        host, _, tail = part[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ConfigError(f"a Redis URL has an empty host in {part!r}")
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        # ``part`` is not quoted: with an unencoded '#' in a password it is the password's
        # first part (``u:p`` of ``redis://u:p#w@host``).
        raise ConfigError(
            "a Redis URL has a port that is not a number (percent-encode '#', '?', '/' and '@' "
            "in a password)"
        ) from None
    if not 0 < port < 65536:
        raise ConfigError(f"a Redis URL has a port out of range: {part!r}")
    return host, port


def _db(path: str) -> int:
    path = path.strip("/")
    if not path:
        return 0
    try:
        return int(path)
    except ValueError:
        raise ConfigError(f"a Redis URL's database must be a number, not {path!r}") from None


def typed_option(name: str, value: str) -> Any:
    """A URL query option as redis-py's ``from_url`` reads it (``health_check_interval=5`` is
    an int, ``socket_keepalive=yes`` a bool); names redis-py does not type stay strings."""
    # Imported here: importing redis imports OpenTelemetry when it is installed, which
    # ``import consumer_host`` must not (tests/test_otel.py).
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    parse: Callable[[str], Any] | None = URL_QUERY_ARGUMENT_PARSERS.get(name)  # type: ignore[assignment]
    return value if parse is None else parse(value)


def _checked(name: str, value: str) -> str:
    try:
        typed_option(name, value)
    except ValueError:
        raise ConfigError(f"Redis URL option {name}={value!r} is not a valid value") from None
    return value
