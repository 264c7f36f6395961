"""``consumer-host publish``: send JSON messages the way a producer would."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import click

from consumer_host.errors import BrokerError
from consumer_host.transports.publisher import Publisher

from .common import BrokerFail, Fail, broker_from, broker_option


@click.command()
@click.argument("queue")
@click.argument("body", required=False, default=None)
@broker_option
@click.option("--count", type=click.IntRange(min=1), default=1, help="Publish it N times.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="KEY=VALUE",
    help="A header (repeatable); VALUE is parsed as JSON when it can be.",
)
def publish(
    queue: str, body: str | None, broker: str | None, count: int, headers: tuple[str, ...]
) -> None:
    """Publish a JSON BODY to QUEUE.

    Without BODY (or with BODY '-') it reads one JSON message per line of stdin, so
    `producer | consumer-host publish QUEUE` works; on a terminal it refuses rather than wait.
    An empty message is written '{}'.
    """
    choice = broker_from(broker, code=None)
    header_map = _parse_headers(headers)
    bodies = list(_bodies(body))
    published = 0
    try:
        with Publisher(choice.url) as publisher:
            for _ in range(count):
                for item in bodies:
                    publisher.publish(queue, item, headers=header_map)
                    published += 1
    except BrokerError as exc:
        raise BrokerFail(str(exc)) from None
    click.echo(f"published {published} message(s) to {queue!r} on {choice.redacted}")


def _parse_headers(values: tuple[str, ...]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise Fail(f"--header expects KEY=VALUE, got {value!r}")
        try:
            headers[key] = json.loads(raw)
        except ValueError:
            headers[key] = raw
    return headers


def _bodies(body: str | None) -> Iterator[Any]:
    from_stdin = body is None or body == "-"
    if body is None and sys.stdin.isatty():
        raise Fail(
            "BODY is missing: give a JSON body ('{}' for an empty one), or pipe messages in, "
            "one JSON document a line"
        )
    if body is None or body == "-":
        # Numbered before blank lines are dropped: an error names the line the user sees.
        lines = [
            (number, line)
            for number, line in enumerate(sys.stdin.read().splitlines(), 1)
            if line.strip()
        ]
    else:
        lines = [(1, body)]
    if not lines:
        raise Fail("no message to publish: stdin was empty (BODY gives one on the command line)")
    for number, line in lines:
        where = f"line {number} of stdin" if from_stdin else "BODY"
        try:
            yield json.loads(line, parse_constant=_not_json, parse_float=_finite)
        except ValueError as exc:
            raise Fail(f"{where} is not JSON: {exc}") from None


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: Python reads it as infinity, written back as Infinity
        raise ValueError(f"{text[:40]} is too large for a JSON number")
    return value


def _not_json(name: str) -> Any:
    """``NaN``, ``Infinity``: Python's json reads them, but they are not JSON, and a consumer
    in another language would refuse the message."""
    raise ValueError(f"{name} is not a JSON value")
