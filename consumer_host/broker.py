"""Broker URLs (which one wins, is it valid, how to show it) and the shared broker circuits."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .breaker import BreakerState, CircuitBreaker
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError
from .events import BreakerChanged, EventHook
from .redaction import redact_url

#: Where the embedded development broker keeps its messages (kombu's filesystem transport).
EMBEDDED_BROKER_DIR = ".consumer-host/broker"
EMBEDDED_BROKER_URL = "filesystem://"

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
    REDIS_URL > ``Host(broker=...)`` > the embedded default broker."""
    if flag:
        return BrokerChoice(validate_url(flag), "--broker")
    for variable in ("CONSUMER_HOST_BROKER_URL", *PLATFORM_VARIABLES):
        value = environ.get(variable, "").strip()
        if value:
            return BrokerChoice(validate_url(value, source=variable), variable)
    if code:
        return BrokerChoice(validate_url(code, source="Host(broker=...)"), "Host(broker=...)")
    return BrokerChoice(EMBEDDED_BROKER_URL, "embedded default")


def validate_url(url: str, *, source: str = "broker URL") -> str:
    """Return ``url`` if consumer-host can use it, else raise a secret-free :class:`ConfigError`."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"{source}: {redact_url(str(url))!r} is not a broker URL "
            "(expected e.g. amqp://user:password@host:5672/vhost or redis://host:6379/0)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"{source}: malformed broker URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{source}: unknown broker scheme {scheme!r} in {redact_url(url)!r} "
            f"(supported: {', '.join(sorted(SCHEMES))})"
        )
    if scheme not in {"memory", "filesystem"} and not parts.hostname:
        raise ConfigError(f"{source}: broker URL {redact_url(url)!r} has no host")
    return url


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()


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
