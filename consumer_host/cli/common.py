"""What every command shares: the one-line failures, the common options, loading an app."""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import click

from consumer_host.errors import ConfigError
from consumer_host.host import Host
from consumer_host.hosting.lifecycle import EXIT_USAGE
from consumer_host.redaction import redact_text, redact_url, redact_userinfo_in
from consumer_host.transports.broker import PLATFORM_VARIABLES, BrokerChoice, resolve_broker

from .config import AppImportError, apply_overrides, load_app, parse_pool_overrides

F = TypeVar("F", bound=Callable[..., Any])


class Fail(click.ClickException):
    """A user mistake: one line on stderr, exit code 2; any URL in it has its secrets masked
    (a ``--url`` or a broker URL with credentials, quoted back)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


class BrokerFail(Fail):
    """The broker refused or could not be reached: one line, exit code 1."""

    exit_code = 1


#: ``--drain-timeout``'s ceiling, a day: platforms' grace periods are seconds to hours, and a
#: drain deadline past it is a typo (``1e308`` overflows the deadline arithmetic at SIGTERM).
MAX_DRAIN_TIMEOUT = 86400.0


class FiniteFloat(click.FloatRange):
    """A float range that refuses ``nan`` and ``inf`` (``FloatRange`` lets ``nan`` through any
    bound, since every comparison with it is false), one line and exit 2 like any bad value."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def broker_option(fn: F) -> F:
    return click.option(
        "--broker",
        metavar="URL",
        help="Broker URL (amqp://, redis://, ...). Default: CONSUMER_HOST_BROKER_URL, "
        "CLOUDAMQP_URL, RABBITMQ_URL, REDIS_TLS_URL, REDIS_URL, Host(broker=...), then the "
        "embedded development broker.",
    )(fn)


def app_argument(fn: F) -> F:
    # Not required by click: a missing APP gets our own line, which names the variable too.
    return click.argument("app", envvar="CONSUMER_HOST_APP", metavar="APP", required=False)(fn)


def url_option(fn: F) -> F:
    return click.option(
        "--url",
        default=lambda: f"http://127.0.0.1:{os.environ.get('CONSUMER_HOST_HEALTH_PORT') or 8080}",
        show_default="http://127.0.0.1:$CONSUMER_HOST_HEALTH_PORT (8080)",
        help="Base URL of a running host's health server.",
    )(fn)


def get_json(
    base: str, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Ask a running host's health server; (status, JSON document)."""
    target = base.rstrip("/") + path
    if not target.startswith(("http://", "https://")):
        raise Fail(f"--url must be an http:// URL, got {base!r}")
    request = urllib.request.Request(target, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - checked above
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BrokerFail(
            f"cannot reach {target}: {reason}; is a host running with --health-port (or "
            "CONSUMER_HOST_HEALTH_PORT)? Point at it with --url http://HOST:PORT, or set "
            "CONSUMER_HOST_HEALTH_PORT to its port"
        ) from None


def load(app: str | None) -> Host:
    if not app:
        raise Fail(
            "APP is missing: give it as an argument or set CONSUMER_HOST_APP "
            "(package.module:host or path/to/app.py)"
        )
    try:
        return load_app(app)
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    except AppImportError as exc:
        # The user's module failed: show them their own traceback, then our one line.
        traceback.print_exception(exc.cause, file=sys.stderr)
        raise Fail(redact_text(str(exc))) from None


def prepare(
    app: str | None, broker: str | None, *, only: list[str], pools: tuple[str, ...]
) -> Host:
    host = load(app)
    try:
        apply_overrides(host, only=only, pools=parse_pool_overrides(pools))
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    host.use_broker(broker_from(broker, code=host.broker))
    return host


def broker_from(flag: str | None, *, code: str | None) -> BrokerChoice:
    try:
        return resolve_broker(os.environ, flag=flag, code=code)
    except ConfigError as exc:
        # A parser's complaint may quote a piece of a malformed URL's userinfo ('u:p').
        raise Fail(redact_userinfo_in(str(exc), _given_url(flag, code)[1])) from None
    except ValueError as exc:  # urllib's own, e.g. "Invalid IPv6 URL"
        source, url = _given_url(flag, code)
        message = redact_userinfo_in(str(exc), url)
        raise Fail(f"{source}: malformed broker URL {redact_url(url)!r}: {message}") from None


def _given_url(flag: str | None, code: str | None) -> tuple[str, str]:
    """The URL ``resolve_broker`` looked at, and where it came from (its order)."""
    if flag:
        return "--broker", flag
    for variable in ("CONSUMER_HOST_BROKER_URL", *PLATFORM_VARIABLES):
        value = os.environ.get(variable, "").strip()
        if value:
            return variable, value
    return "Host(broker=...)", code or ""


def table(
    rows: list[dict[str, Any]],
    columns: list[str],
    color: dict[str, dict[str, str]] | None = None,
) -> None:
    color = color or {}
    columns = [c for c in columns if any(c in row for row in rows)] or columns
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        parts = []
        for column, value, width in zip(columns, row, widths, strict=True):
            text = value.ljust(width)
            colour = color.get(column, {}).get(value)
            parts.append(click.style(text, fg=colour) if colour else text)
        click.echo("  ".join(parts).rstrip())
