"""What a consumer can be told, declared once.

:class:`ConsumerOptions` is the single declaration of every ``@host.consumer(...)`` keyword: its
fields carry the default, the rule it must satisfy and the sentence the README's table shows.
Registration, validation, the CLI's overrides and typo suggestions all read it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal, Required, TypedDict

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import ConfigError
from consumer_host.supervision.backoff import BackoffPolicy
from consumer_host.transports.base import QueueSpec, Transport
from consumer_host.transports.choose import transport_for

from .decoding import content_types
from .killswitch import KillSwitch

Check = Callable[[Any], bool]

#: ``partition_by``'s order: ``strict`` keeps it across retries, ``fetch`` for first attempts.
PartitionOrder = Literal["strict", "fetch"]


def _int_at_least(minimum: int) -> tuple[Check, str]:
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    return check, f"an integer >= {minimum}"


def _seconds(*, positive: bool = False) -> tuple[Check, str]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return value > 0 if positive else value >= 0

    return check, "> 0 seconds" if positive else ">= 0 seconds"


def _optional_name(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value))


def _option(
    default: Any,
    doc: str,
    rule: tuple[Check, str] | None = None,
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    metadata = {"doc": doc, "rule": rule}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class ConsumerOptions:
    """How one registered consumer reads, runs handlers and treats failures. Seconds everywhere."""

    queue: str = field(metadata={"doc": "the queue to consume; declared durable"})
    concurrency: int = _option(
        1,
        "messages one instance handles at once over its one connection: threads for plain "
        "handlers, tasks for `async def` ones",
        _int_at_least(1),
    )
    prefetch: int | None = _option(
        None,
        "unacked messages an instance may hold; default max(10, 2 x concurrency); with "
        "`partition_by`, up to as many again that wait for their key",
        (lambda v: v is None or _int_at_least(1)[0](v), "an integer >= 1"),
    )
    partition_by: Callable[[Any], Any] | None = _option(
        None,
        "`fn(message) -> key`: within an instance, messages with the same key never run at the "
        "same time and run in the order they were fetched, retries included (see "
        "`partition_order`); different keys run side by side",
        (lambda v: v is None or callable(v), "callable"),
    )
    partition_order: PartitionOrder = _option(
        "strict",
        "with `partition_by`: `strict` retries (and defers) a failed message in its key's lane, "
        "unacked, while the key's later messages wait behind it and other keys go on; `fetch` "
        "sends it through the broker's retry path, so it comes back after the key's later "
        "messages (see below)",
        (lambda v: v in ("strict", "fetch"), "'strict' or 'fetch'"),
    )
    max_retries: int = _option(
        3, "retries after the first failure; then the message is dead-lettered", _int_at_least(0)
    )
    max_deliveries: int = _option(
        5,
        "deliveries without a settlement (the handler killed the process) before a message is "
        "dead-lettered, where the broker counts them (quorum queues, Redis)",
        _int_at_least(1),
    )
    retry_backoff_min: float = _option(1.0, "first retry delay", _seconds(positive=True))
    retry_backoff_max: float = _option(60.0, "longest retry delay", _seconds(positive=True))
    dead_letter: str | None = _option(
        None, "where failed and bad messages go; default `<queue>.dlq`", (_optional_name, "a name")
    )
    accept: tuple[str, ...] = _option(
        ("json",), "content types to decode; `pickle` only if you list it"
    )
    max_body_bytes: int = _option(
        1_048_576,
        "larger bodies are dead-lettered undecoded (they are still read off the broker whole: "
        "it bounds what a handler sees, not the memory a huge message takes while it is read)",
        _int_at_least(1),
    )
    exchange: str | None = _option(
        None, "bind the queue to this direct exchange", (_optional_name, "a name")
    )
    routing_key: str | None = _option(
        None, "the binding's routing key; default the queue name", (_optional_name, "a name")
    )
    queue_arguments: dict[str, Any] = _option(
        None,
        "AMQP arguments for declaring the queue, e.g. `{'x-queue-type': 'quorum'}`; empty: an "
        "existing queue is used as it is",
        (lambda v: isinstance(v, dict), "a dict"),
        factory=dict,
    )
    heartbeat: float = _option(20.0, "AMQP heartbeat (on Redis, the read timeout)", _seconds())
    ack_coalescing: bool = _option(
        True,
        "AMQP: one multiple ack per contiguous run of finished messages",
        (lambda v: isinstance(v, bool), "True or False"),
    )
    group: str | None = _option(
        None,
        "Redis Streams: the consumer group; default the queue name",
        (_optional_name, "a name"),
    )
    claim_after: float = _option(
        60.0,
        "Redis Streams: idle time after which a silent consumer's entries are claimed",
        _seconds(),
    )
    reconnect_backoff_min: float = _option(
        0.5, "first reconnect delay while the broker circuit is closed", _seconds(positive=True)
    )
    reconnect_backoff_max: float = _option(30.0, "longest reconnect delay", _seconds(positive=True))
    poll_interval: float = _option(
        0.5,
        "longest idle wait for a message (at least 5 s where a stop or pause wakes the read: "
        "RabbitMQ, one Redis node)",
        _seconds(),
    )
    kill_switch: KillSwitch | None = _option(
        None,
        "stop taking messages while most fail: `KillSwitch(activation=20, trip_ratio=0.5, "
        "pause=30.0)`; `None` turns it off",
        (lambda v: v is None or isinstance(v, KillSwitch), "a KillSwitch or None"),
        factory=KillSwitch,
    )
    stuck_after: float | None = _option(
        None,
        "a handler running longer is reported once with its stack; default half the "
        "`liveness_timeout`, so the report comes before the restart",
        (lambda v: v is None or _seconds(positive=True)[0](v), "> 0 seconds"),
    )

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue:
            raise ConfigError(f"queue must be a non-empty string, got {self.queue!r}")
        for spec in option_fields(type(self)):
            rule = spec.metadata.get("rule")
            value = getattr(self, spec.name)
            if rule is not None and not rule[0](value):
                raise ConfigError(f"{spec.name} must be {rule[1]}, got {value!r}")
        accept = (self.accept,) if isinstance(self.accept, str) else tuple(self.accept)
        object.__setattr__(self, "accept", accept)
        object.__setattr__(self, "accepted", content_types(accept))
        if self.prefetch is None:
            object.__setattr__(self, "prefetch", max(10, 2 * self.concurrency))
        elif self.prefetch < self.concurrency:
            raise ConfigError(
                f"prefetch ({self.prefetch}) must be at least concurrency ({self.concurrency}): "
                "a handler slot with no message to take would stay idle"
            )
        BackoffPolicy(minimum=self.retry_backoff_min, maximum=self.retry_backoff_max, jitter=0)
        BackoffPolicy(minimum=self.reconnect_backoff_min, maximum=self.reconnect_backoff_max)

    accepted: frozenset[str] = field(init=False, repr=False, compare=False)

    @property
    def prefetch_count(self) -> int:
        """The resolved prefetch (``prefetch`` after ``__post_init__`` is never ``None``)."""
        assert self.prefetch is not None
        return self.prefetch

    @property
    def transport_window(self) -> int:
        """How many unsettled messages the transport may hold (AMQP ``basic.qos``). With
        ``partition_by``, messages waiting for their key (behind a running one, or behind a
        retry waiting in its lane) take no room from other keys, up to a second ``prefetch``:
        the consumer itself keeps the rest within ``prefetch``."""
        return self.prefetch_count * (1 if self.partition_by is None else 2)

    @property
    def dead_letter_queue(self) -> str:
        return self.dead_letter or f"{self.queue}.dlq"

    def queue_spec(self) -> QueueSpec:
        return QueueSpec(
            queue=self.queue,
            dead_letter=self.dead_letter_queue,
            exchange=self.exchange,
            routing_key=self.routing_key,
            prefetch=self.transport_window,
            queue_arguments=dict(self.queue_arguments),
        )

    def transport_for(self, url: str, *, instance: str, clock: Clock = SYSTEM_CLOCK) -> Transport:
        """A fresh transport for one consumer instance on ``url``."""
        return transport_for(
            url,
            self.queue_spec(),
            instance=instance,
            clock=clock,
            heartbeat=self.heartbeat,
            poll_interval=self.poll_interval,
            ack_coalescing=self.ack_coalescing,
            group=self.group,
            claim_after=self.claim_after,
        )

    def retry_delay(self, attempt: int) -> float:
        """Delay before retrying a message whose ``attempt``-th delivery failed.

        No jitter: on RabbitMQ each distinct delay is a queue, so the set of delays stays small.
        """
        policy = BackoffPolicy(
            minimum=self.retry_backoff_min, maximum=self.retry_backoff_max, jitter=0
        )
        return policy.base_delay(attempt - 1)


class ConsumerSettings(TypedDict, total=False):
    """Every :class:`ConsumerOptions` keyword but ``queue``, typed for ``mypy`` and editors
    (``tests/test_typing.py`` proves the two declarations agree, name for name and type for
    type)."""

    concurrency: int
    prefetch: int | None
    partition_by: Callable[[Any], Any] | None
    partition_order: PartitionOrder
    max_retries: int
    max_deliveries: int
    retry_backoff_min: float
    retry_backoff_max: float
    dead_letter: str | None
    accept: tuple[str, ...]
    max_body_bytes: int
    exchange: str | None
    routing_key: str | None
    queue_arguments: dict[str, Any]
    heartbeat: float
    ack_coalescing: bool
    group: str | None
    claim_after: float
    reconnect_backoff_min: float
    reconnect_backoff_max: float
    poll_interval: float
    kill_switch: KillSwitch | None
    stuck_after: float | None


class ConsumerKeywords(ConsumerSettings, total=False):
    """Every :class:`ConsumerOptions` keyword; ``queue`` is required."""

    queue: Required[str]


def option_fields(options: type) -> list[Field[Any]]:
    """The user-settable fields of an options dataclass, in declaration order."""
    return [f for f in fields(options) if f.init]


def split_options(given: Mapping[str, Any], *groups: type, who: str) -> list[dict[str, Any]]:
    """Split ``given`` keywords between option dataclasses; an unknown one is a ConfigError
    that suggests the nearest known name (``prefech`` -> ``prefetch``)."""
    names = [{f.name for f in option_fields(group)} for group in groups]
    parts: list[dict[str, Any]] = [{} for _ in groups]
    for key, value in given.items():
        for index, known in enumerate(names):
            if key in known:
                parts[index][key] = value
                break
        else:
            raise ConfigError(unknown_option(key, set().union(*names), who=who))
    return parts


def unknown_option(key: str, known: Iterable[str], *, who: str) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{who}: unknown option {key!r}; {hint}options are: {', '.join(known)}"


def options_table(options: type) -> str:
    """The README's table of an options dataclass: name, default, meaning."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for spec in option_fields(options):
        if spec.default is not MISSING:
            default = "(required)" if spec.name == "queue" else _show(spec.default)
        elif spec.default_factory is not MISSING:
            default = _show(spec.default_factory())
        else:
            default = "(required)"
        rows.append(f"| `{spec.name}` | {default} | {spec.metadata.get('doc', '')} |")
    return "\n".join(rows)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if inspect.isfunction(value):
        return value.__name__
    return f"`{value!r}`"
