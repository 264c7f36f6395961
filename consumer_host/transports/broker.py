"""Broker URLs (which one wins, is it valid, how to show it) and the shared broker circuits."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import platformdirs

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import ConfigError
from consumer_host.redaction import redact_url
from consumer_host.supervision.breaker import BreakerState, CircuitBreaker
from consumer_host.supervision.events import BreakerChanged, EventHook

from .redis_keys import dead_letter_key

#: The embedded development broker: kombu's filesystem transport, its folder in the URL's path.
EMBEDDED_BROKER_URL = "filesystem://"
#: Overrides the per-user data directory (where the embedded broker keeps its messages).
DATA_DIR_VARIABLE = "CONSUMER_HOST_DATA_DIR"

KOMBU_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "memory", "filesystem"})
REDIS_SCHEMES = frozenset({"redis", "rediss"})
STREAMS_SCHEMES = frozenset({"redis+streams", "rediss+streams"})
SCHEMES = KOMBU_SCHEMES | REDIS_SCHEMES | STREAMS_SCHEMES

#: Platform variables, in the order they are looked at after CONSUMER_HOST_BROKER_URL.
PLATFORM_VARIABLES = ("CLOUDAMQP_URL", "RABBITMQ_URL", "REDIS_TLS_URL", "REDIS_URL")


@dataclass(frozen=True)
class BrokerChoice:
    url: str
    source: str
    """Where the URL came from: ``--broker``, an environment variable, ``Host(broker=...)``..."""
    overridden: str | None = None
    """The ``Host(broker=...)`` URL an environment variable beat, redacted; ``None`` if none."""

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def embedded(self) -> bool:
        return self.source == "embedded default"


def resolve_broker(
    environ: Mapping[str, str], *, flag: str | None = None, code: str | None = None
) -> BrokerChoice:
    """``--broker`` > CONSUMER_HOST_BROKER_URL > CLOUDAMQP_URL > RABBITMQ_URL > REDIS_TLS_URL >
    REDIS_URL > ``Host(broker=...)`` > the embedded default broker.

    A variable that beats a URL given in code is recorded in ``overridden`` (platforms set
    REDIS_URL on their own, so the user may not know it is there). A ``filesystem://`` URL without
    a folder gets the data directory's (``CONSUMER_HOST_DATA_DIR`` or the per-user one).
    """
    if flag:
        return _with_folder(
            BrokerChoice(validate_url(flag, source="--broker"), "--broker"), environ
        )
    for variable in ("CONSUMER_HOST_BROKER_URL", *PLATFORM_VARIABLES):
        value = environ.get(variable, "").strip()
        if value:
            overridden = redact_url(code) if code and code.strip() != value else None
            choice = BrokerChoice(validate_url(value, source=variable), variable, overridden)
            return _with_folder(choice, environ)
    if code:
        choice = BrokerChoice(validate_url(code, source="Host(broker=...)"), "Host(broker=...)")
        return _with_folder(choice, environ)
    return _with_folder(BrokerChoice(EMBEDDED_BROKER_URL, "embedded default"), environ)


def data_dir(environ: Mapping[str, str]) -> Path:
    """Where consumer-host keeps local state: ``CONSUMER_HOST_DATA_DIR``, else the per-user data
    directory (``~/.local/share/consumer-host`` on Linux, ``~/Library/Application Support/
    consumer-host`` on macOS), never the current directory."""
    configured = environ.get(DATA_DIR_VARIABLE, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_data_dir("consumer-host", appauthor=False))


def embedded_broker_folder(url: str) -> str:
    """The folder a ``filesystem://`` URL keeps its messages in (the per-user default if none)."""
    path = urlsplit(url).path
    return path if path not in ("", "/") else str(data_dir({}) / "broker")


def _with_folder(choice: BrokerChoice, environ: Mapping[str, str]) -> BrokerChoice:
    if scheme_of(choice.url) != "filesystem" or urlsplit(choice.url).path not in ("", "/"):
        return choice
    folder = (data_dir(environ) / "broker").as_posix()
    url = f"filesystem://{'' if folder.startswith('/') else '/'}{folder}"
    return BrokerChoice(url, choice.source, choice.overridden)


def validate_url(url: str, *, source: str = "broker URL") -> str:
    """Return ``url`` if consumer-host can use it, else raise a secret-free :class:`ConfigError`."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{source}: {redact_url(str(url))!r} is not a broker URL "
            "(expected e.g. amqp://user:password@host:5672/vhost or redis://host:6379/0)"
        )
    if scheme_of(url) in REDIS_SCHEMES | STREAMS_SCHEMES:
        return validate_redis_url(url, source=source)  # also Sentinel sets and clusters
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        # Not urllib's text: it quotes what it could not read ("as 'u:p'"), a password's
        # first part when the password holds an unencoded '#', '?' or '/'.
        raise ConfigError(
            f"{source}: malformed broker URL {redact_url(url)!r} (a port that is not a number "
            "or an unclosed '[': percent-encode '#', '?', '/' and '@' in a password)"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{source}: unknown broker scheme {scheme!r} in {redact_url(url)!r} "
            f"(supported: {', '.join(sorted(SCHEMES))})"
        )
    if scheme not in {"memory", "filesystem"} and not parts.hostname:
        raise ConfigError(f"{source}: broker URL {redact_url(url)!r} has no host")
    clashes = sorted(_KOMBU_URL_PARTS.intersection(parse_qs(parts.query, keep_blank_values=True)))
    if scheme in KOMBU_SCHEMES and clashes:
        # kombu passes these from the URL's own parts and the query alike: a TypeError inside it.
        raise ConfigError(
            f"{source}: {scheme}:// takes {', '.join(clashes)} from the URL itself "
            f"({scheme}://user:password@host:5672/vhost), not from the query string, in "
            f"{redact_url(url)!r}"
        )
    return url


def validate_redis_url(url: str, *, source: str) -> str:
    """A Redis URL of any form (one node, ``?sentinel=``, ``?cluster=true``), or ConfigError."""
    from .redis_urls import parse_redis_url  # redis-py free: the parser is plain text

    try:
        parse_redis_url(url)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return url


#: What kombu's ``parse_url`` takes from a URL's parts; the same name in the query collides.
_KOMBU_URL_PARTS = frozenset(
    {"transport", "hostname", "port", "userid", "password", "virtual_host"}
)


def messaging_system(url: str) -> str:
    """OpenTelemetry's ``messaging.system`` for a broker URL: ``rabbitmq``, ``redis``, or
    kombu's transport name (``memory``, ``filesystem``)."""
    scheme = scheme_of(url)
    if scheme in {"amqp", "amqps", "pyamqp"}:
        return "rabbitmq"
    if scheme.startswith("redis"):
        return "redis"
    return scheme


def scheme_of(url: str) -> str:
    """``amqp`` of ``amqp://...``; read without urllib, which raises on a malformed host part
    (``[::1:6379``) that validation reports in its own words."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else urlsplit(url).scheme.lower()


def dead_letter_name(url: str, queue: str, dead_letter: str) -> str:
    """Where ``queue``'s dead letters really are on ``url``, for people to read: the default
    ``orders.dlq`` is the key ``{orders}.dlq`` on a Redis Cluster (see ``redis_keys``); on every
    other broker, and for a name the user chose, the name as configured."""
    if scheme_of(url) in REDIS_SCHEMES | STREAMS_SCHEMES:
        return dead_letter_key(url, queue, dead_letter)
    return dead_letter


@dataclass(frozen=True, kw_only=True)
class BrokerCircuitOptions:
    """The broker circuit: opens at ``threshold`` connection failures within ``window``."""

    threshold: int = 5
    window: float = 60.0
    cooldown: float = 15.0


class BrokerCircuits:
    """One circuit breaker per broker URL, shared by every consumer of that broker in a host."""

    def __init__(
        self,
        emit: EventHook,
        *,
        clock: Clock = SYSTEM_CLOCK,
        options: BrokerCircuitOptions | None = None,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._options = options or BrokerCircuitOptions()
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_url(self, url: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(url)
            if breaker is None:
                breaker = CircuitBreaker(
                    f"broker:{redact_url(url)}",
                    threshold=self._options.threshold,
                    window=self._options.window,
                    cooldown=self._options.cooldown,
                    clock=self._clock,
                    on_transition=self._on_transition,
                )
                self._breakers[url] = breaker
            return breaker

    def states(self) -> dict[str, str]:
        """Redacted broker URL -> breaker state."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.name.removeprefix("broker:"): str(b.state) for b in breakers}

    def _on_transition(self, breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        self._emit(
            BreakerChanged(
                breaker=breaker.name, old=str(old), new=str(new), failures=breaker.failures
            )
        )
