"""The ``consumer-host`` command: run, list, publish, check.

User mistakes end with one line on stderr and exit code 2; a failure inside the user's own
module shows their traceback (they need it) and exits 2 as well.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from . import __version__
from .broker import BrokerChoice, resolve_broker
from .config import AppImportError, apply_overrides, load_app, parse_pool_overrides
from .errors import BrokerError, ConfigError
from .host import EXIT_USAGE, Host
from .logs import LOG_FORMATS, configure_logging
from .publisher import Publisher
from .redaction import redact_text

F = TypeVar("F", bound=Callable[..., Any])
LOG_LEVELS = ("debug", "info", "warning", "error")


class Fail(click.ClickException):
    """A user mistake: one line on stderr, exit code 2."""

    exit_code = EXIT_USAGE


class BrokerFail(Fail):
    """The broker refused or could not be reached: one line, exit code 1."""

    exit_code = 1


def broker_option(fn: F) -> F:
    return click.option(
        "--broker",
        metavar="URL",
        help="Broker URL (amqp://, redis://, ...). Default: CONSUMER_HOST_BROKER_URL, "
        "CLOUDAMQP_URL, RABBITMQ_URL, REDIS_TLS_URL, REDIS_URL, Host(broker=...), then the "
        "embedded development broker.",
    )(fn)


def app_argument(fn: F) -> F:
    return click.argument("app", envvar="CONSUMER_HOST_APP", metavar="APP")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="consumer-host")
def cli() -> None:
    """Run long-lived message consumers as supervised, self-healing loops.

    APP is package.module:attr, package.module (attribute `host`) or path/to/app.py[:attr].
    """


@cli.command()
@app_argument
@broker_option
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=25.0,
    envvar="CONSUMER_HOST_DRAIN_TIMEOUT",
    show_envvar=True,
    help="Seconds to finish in-flight messages after SIGTERM (Heroku kills at 30).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    envvar="CONSUMER_HOST_ONLY",
    show_envvar=True,
    help="Run only this worker (repeatable).",
)
@click.option(
    "--pool",
    "pools",
    multiple=True,
    metavar="NAME=N",
    envvar="CONSUMER_HOST_POOL",
    show_envvar=True,
    help="Override a worker's pool size (repeatable).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="auto",
    envvar="CONSUMER_HOST_LOG_FORMAT",
    show_envvar=True,
    help="auto: console on a terminal, JSON lines otherwise.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    envvar="CONSUMER_HOST_LOG_LEVEL",
    show_envvar=True,
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="CONSUMER_HOST_HEALTH_PORT",
    show_envvar=True,
    help="Serve /healthz, /readyz, /metrics and /status on this port (off if unset).",
)
@click.option(
    "--health-host",
    default="0.0.0.0",  # noqa: S104 - probes and scrapes come from off-host
    envvar="CONSUMER_HOST_HEALTH_HOST",
    show_envvar=True,
    help="Address the health server listens on.",
)
def run(
    app: str,
    broker: str | None,
    drain_timeout: float,
    only: tuple[str, ...],
    pools: tuple[str, ...],
    log_format: str,
    log_level: str,
    health_port: int | None,
    health_host: str,
) -> None:
    """Run APP until SIGTERM or Ctrl-C (a second one ends it at once)."""
    host = _prepare(app, broker, only=list(only), pools=pools)
    configure_logging(log_format, log_level, host=host.name)
    host.drain_timeout = drain_timeout
    if health_port is not None:
        host.health_port = health_port
        host.health_host = health_host
    try:
        code = host.run()
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    sys.exit(code)


@cli.command("list")
@app_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(app: str, as_json: bool) -> None:
    """Show APP's workers, expanded into their instances."""
    host = _load(app)
    rows = [
        {
            "instance": instance,
            "worker": reg.name,
            "kind": reg.kind,
            "pool": reg.options.pool,
            "critical": reg.options.critical,
            **dict(reg.details),
        }
        for reg in host.registrations
        for instance in reg.instance_names()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(
        rows,
        ["instance", "kind", "queue", "pool", "critical", "dead_letter", "prefetch", "max_retries"],
    )


@cli.command()
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
    """Publish a JSON BODY to QUEUE (BODY '-' reads one message per line of stdin)."""
    choice = _broker(broker, code=None)
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


@cli.command()
@app_argument
@broker_option
def check(app: str, broker: str | None) -> None:
    """Connect, declare every queue and dead-letter queue, print their depths; exit 0 or 1."""
    host = _prepare(app, broker, only=[], pools=())
    choice = host.broker_choice
    rows = []
    failed = False
    for reg in host.registrations:
        if reg.kind == "worker":
            continue
        options = reg.consumer_options
        assert options is not None
        transport = options.transport_for(choice.url, instance=f"{reg.name}-check")
        try:
            transport.connect()
            depths = transport.depth()
        except BrokerError as exc:
            click.echo(f"consumer-host: check failed: {exc}", err=True)
            failed = True
            break
        finally:
            transport.close()
        for queue_name, depth in depths.items():
            rows.append({"worker": reg.name, "queue": queue_name, "messages": depth})
    if failed:
        sys.exit(1)
    _table(rows, ["worker", "queue", "messages"])
    click.echo(f"ok: {choice.redacted} ({choice.source})")


def url_option(fn: F) -> F:
    return click.option(
        "--url",
        default=lambda: f"http://127.0.0.1:{os.environ.get('CONSUMER_HOST_HEALTH_PORT') or 8080}",
        show_default="http://127.0.0.1:$CONSUMER_HOST_HEALTH_PORT (8080)",
        help="Base URL of a running host's health server.",
    )(fn)


@cli.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the /status document as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
def status(url: str, as_json: bool, watch: bool) -> None:
    """Show a running host's instances and broker circuits (from its /status)."""
    while True:
        code, document = _get_json(url, "/status")
        if code != 200:
            raise BrokerFail(f"{url}/status answered {code}")
        if as_json:
            click.echo(json.dumps(document, indent=2))
        else:
            if watch:
                click.clear()
            _render_status(document)
        if not watch:
            return
        try:
            threading.Event().wait(2.0)
        except KeyboardInterrupt:
            return


@cli.command()
@url_option
@click.option("--ready", is_flag=True, help="Check readiness (/readyz) instead of liveness.")
def health(url: str, ready: bool) -> None:
    """Exit 0 if a running host is live (or ready), 1 if not: for exec probes."""
    path = "/readyz" if ready else "/healthz"
    code, document = _get_json(url, path)
    ok = code == 200
    detail = {k: v for k, v in document.items() if k != "ok"}
    click.echo(
        f"{'ok' if ok else 'not ok'}: {path} {code} {json.dumps(detail) if detail else ''}".rstrip()
    )
    sys.exit(0 if ok else 1)


_STATE_COLORS = {
    "running": "green",
    "backing_off": "yellow",
    "starting": "cyan",
    "tripped": "red",
    "stopped": "bright_black",
}


def _render_status(document: dict[str, Any]) -> None:
    flags = []
    if document.get("stopping"):
        flags.append(click.style("draining", fg="yellow"))
    flags.append(
        click.style("ready", fg="green")
        if document.get("ready")
        else click.style("not ready", fg="red")
    )
    click.echo(f"{document['host']}  up {document['uptime']:.0f}s  {'  '.join(flags)}")
    rows = []
    for record in document["instances"]:
        rows.append(
            {
                "instance": record["name"],
                "state": record["state"],
                "restarts": record["restarts"],
                "queue": record.get("queue", ""),
                "acked": record.get("acked", ""),
                "retried": record.get("retried", ""),
                "dead": record.get("dead_lettered", ""),
                "last error": (record.get("last_error") or "")[:60],
            }
        )
    columns = ["instance", "state", "restarts", "queue", "acked", "retried", "dead", "last error"]
    _table(rows, columns, color={"state": _STATE_COLORS})
    for broker, state in document.get("brokers", {}).items():
        colour = {"closed": "green", "half_open": "yellow", "open": "red"}.get(state)
        click.echo(f"broker {broker}: circuit {click.style(state, fg=colour)}")


def _get_json(base: str, path: str) -> tuple[int, dict[str, Any]]:
    target = base.rstrip("/") + path
    if not target.startswith(("http://", "https://")):
        raise Fail(f"--url must be an http:// URL, got {base!r}")
    try:
        with urllib.request.urlopen(target, timeout=5) as response:  # noqa: S310 - checked above
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BrokerFail(f"cannot reach {target}: {reason}") from None


# -- helpers --------------------------------------------------------------------------------------


def _load(app: str) -> Host:
    try:
        return load_app(app)
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    except AppImportError as exc:
        # The user's module failed: show them their own traceback, then our one line.
        traceback.print_exception(exc.cause, file=sys.stderr)
        raise Fail(redact_text(str(exc))) from None


def _prepare(app: str, broker: str | None, *, only: list[str], pools: tuple[str, ...]) -> Host:
    host = _load(app)
    try:
        apply_overrides(host, only=only, pools=parse_pool_overrides(pools))
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    host.use_broker(_broker(broker, code=host.broker))
    return host


def _broker(flag: str | None, *, code: str | None) -> BrokerChoice:
    try:
        return resolve_broker(os.environ, flag=flag, code=code)
    except ConfigError as exc:
        raise Fail(str(exc)) from None


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
    if body is None:
        yield {}
        return
    lines = (
        [line for line in sys.stdin.read().splitlines() if line.strip()] if body == "-" else [body]
    )
    for number, line in enumerate(lines, 1):
        try:
            yield json.loads(line)
        except ValueError as exc:
            where = f"line {number} of stdin" if body == "-" else "BODY"
            raise Fail(f"{where} is not JSON: {exc}") from None


def _table(
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


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: click errors become one line on stderr with exit code 2."""
    try:
        cli.main(args=argv, prog_name="consumer-host", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("consumer-host: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"consumer-host: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)
