"""``consumer-host dlq``: look at, replay and purge the dead letters of an app's consumers.

Every command finds a consumer's queue and dead-letter queue in the app's registrations and the
broker the way ``run`` and ``check`` do. Listing changes nothing; replay confirms each copy on the
consumer's queue before it removes the dead letter; purge needs ``--yes``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import click
from click.decorators import FC

from consumer_host.errors import BrokerError
from consumer_host.host import Host
from consumer_host.transports.broker import (
    REDIS_SCHEMES,
    STREAMS_SCHEMES,
    dead_letter_name,
    scheme_of,
)
from consumer_host.transports.dead_letters import (
    DeadLetterMoveStopped,
    DeadLetterStore,
    Group,
    Selection,
    summarize,
)
from consumer_host.transports.kombu_transport import AMQP_SCHEMES

from .common import BrokerFail, Fail, app_argument, broker_option, prepare, table

_SAMPLE_WIDTH = 60


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list them, move them back to their queue, or delete them."""


def consumer_option(*, required: bool) -> Callable[[FC], FC]:
    return click.option(
        "--consumer",
        "consumer_name",
        metavar="NAME",
        required=required,
        help="The consumer (as in 'consumer-host list'): its queue and dead-letter queue.",
    )


def error_type_option(fn: FC) -> FC:
    return click.option(
        "--error-type",
        metavar="TYPE",
        default=None,
        help="Only dead letters whose x-error-type is TYPE (an exception class name).",
    )(fn)


@dlq.command("list")
@app_argument
@consumer_option(required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@broker_option
def list_(app: str, consumer_name: str | None, as_json: bool, broker: str | None) -> None:
    """Dead letters grouped by consumer and error type, with counts and times (changes nothing)."""
    host = prepare(app, broker, only=[], pools=())
    groups: list[Group] = []
    for target in _consumers(host, consumer_name):
        with _store(host, target) as store, _broker_errors():
            groups.extend(summarize(target.consumer, store.browse()))
    rows = [group.as_dict() for group in groups]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
        return
    for row in rows:
        row["error_type"] = row["error_type"] or "-"
        sample = (row["sample_error"] or "").replace("\n", " ")
        row["sample_error"] = (
            sample[: _SAMPLE_WIDTH - 3] + "..." if len(sample) > _SAMPLE_WIDTH else sample
        )
    table(
        rows,
        ["consumer", "error_type", "count", "first_failed_at", "last_failed_at", "sample_error"],
    )


@dlq.command()
@app_argument
@consumer_option(required=True)
@error_type_option
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Move at most N."
)
@broker_option
def replay(
    app: str, consumer_name: str, error_type: str | None, limit: int | None, broker: str | None
) -> None:
    """Move dead letters back to the consumer's queue with their attempt counter reset."""
    host = prepare(app, broker, only=[], pools=())
    [target] = _consumers(host, consumer_name)
    selection = Selection(error_type=error_type, limit=limit)
    with _store(host, target) as store, _broker_errors("replayed"):
        moved = store.replay(selection)
    click.echo(f"replayed {moved} dead letter(s) from {target.shown(host)!r} to {target.queue!r}")


@dlq.command()
@app_argument
@consumer_option(required=True)
@error_type_option
@click.option("--yes", is_flag=True, help="Really delete them (they cannot be brought back).")
@broker_option
def purge(
    app: str, consumer_name: str, error_type: str | None, yes: bool, broker: str | None
) -> None:
    """Delete the consumer's dead letters (of one error type with --error-type); needs --yes."""
    host = prepare(app, broker, only=[], pools=())
    [target] = _consumers(host, consumer_name)
    if not yes:
        raise Fail(
            f"purge deletes dead letters from {target.shown(host)!r} for good; add --yes to do it"
        )
    with _store(host, target) as store, _broker_errors("purged"):
        purged = store.purge(Selection(error_type=error_type))
    click.echo(f"purged {purged} dead letter(s) from {target.shown(host)!r}")


class _Target(NamedTuple):
    """One consumer of the app: its name, the queue it reads, where its dead letters go (as
    configured; on a Redis Cluster the store reads the default's real key, ``{orders}.dlq``)."""

    consumer: str
    queue: str
    dead_letter_queue: str

    def shown(self, host: Host) -> str:
        """The dead-letter queue's real name on the host's broker, for messages."""
        return dead_letter_name(host.broker_choice.url, self.queue, self.dead_letter_queue)


def _consumers(host: Host, name: str | None) -> list[_Target]:
    """The app's consumers (or the one named)."""
    found = [
        _Target(reg.name, reg.consumer_options.queue, reg.consumer_options.dead_letter_queue)
        for reg in host.registry.registrations
        if reg.consumer_options is not None
    ]
    if name is None:
        return found
    chosen = [target for target in found if target.consumer == name]
    if not chosen:
        known = ", ".join(target.consumer for target in found) or "none"
        raise Fail(f"no consumer named {name!r} in {host.name!r} (consumers: {known})")
    return chosen


@contextmanager
def _store(host: Host, target: _Target) -> Iterator[DeadLetterStore]:
    """The dead-letter store of one consumer on the host's broker, closed afterwards."""
    url = host.broker_choice.url
    scheme = scheme_of(url)
    store: DeadLetterStore
    if scheme in STREAMS_SCHEMES or scheme in REDIS_SCHEMES:
        from consumer_host.transports.redis_dead_letters import (
            RedisListDeadLetters,
            RedisStreamDeadLetters,
        )

        kind = RedisStreamDeadLetters if scheme in STREAMS_SCHEMES else RedisListDeadLetters
        store = kind(url, queue=target.queue, dead_letter=target.dead_letter_queue)
    elif scheme in AMQP_SCHEMES:
        from consumer_host.transports.kombu_dead_letters import KombuDeadLetters

        store = KombuDeadLetters(url, queue=target.queue, dead_letter=target.dead_letter_queue)
    elif scheme == "filesystem":
        from consumer_host.transports.embedded_dead_letters import EmbeddedDeadLetters

        store = EmbeddedDeadLetters(url, queue=target.queue, dead_letter=target.dead_letter_queue)
    else:
        raise Fail(
            f"dlq works on RabbitMQ, Redis and the embedded broker, not on "
            f"{host.broker_choice.redacted} "
            f"({host.broker_choice.source}); pass --broker"
        )
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _broker_errors(verb: str = "") -> Iterator[None]:
    """A broker failure is one line and exit 1; a replay or purge says how far it got."""
    try:
        yield
    except DeadLetterMoveStopped as exc:
        raise BrokerFail(f"{verb} {exc.done} dead letter(s), then stopped: {exc}") from None
    except BrokerError as exc:
        raise BrokerFail(str(exc)) from None
