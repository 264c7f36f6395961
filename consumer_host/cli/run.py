"""``consumer-host run``: the host as a program."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import NoReturn

import click
import structlog

from consumer_host.errors import ConfigError
from consumer_host.hosting.tripped import TrippedReminder
from consumer_host.operating.logs import LOG_FORMATS, configure_logging
from consumer_host.processes.parent import become_child, child_index
from consumer_host.processes.recycling import RecycleLimits

from .common import MAX_DRAIN_TIMEOUT, Fail, FiniteFloat, app_argument, broker_option, prepare
from .processes import process_options, run_processes, wants_parent

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command()
@app_argument
@broker_option
@click.option(
    "--drain-timeout",
    type=FiniteFloat(min=0, max=MAX_DRAIN_TIMEOUT),
    default=25.0,
    envvar="CONSUMER_HOST_DRAIN_TIMEOUT",
    show_envvar=True,
    help="Seconds to finish in-flight messages after SIGTERM (Heroku kills at 30); at most a day.",
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
@click.option(
    "--exit-on-trip",
    is_flag=True,
    envvar="CONSUMER_HOST_EXIT_ON_TRIP",
    show_envvar=True,
    help="Stop (exit 1) when a non-critical worker trips, instead of running on without it "
    "(a WARNING names it every minute meanwhile).",
)
@process_options
def run(
    app: str | None,
    broker: str | None,
    drain_timeout: float,
    only: tuple[str, ...],
    pools: tuple[str, ...],
    log_format: str,
    log_level: str,
    health_port: int | None,
    health_host: str,
    exit_on_trip: bool,
    processes: int,
    max_messages_per_process: int | None,
    max_memory_per_process: float | None,
    reload: bool,
) -> None:
    """Run APP until SIGTERM or Ctrl-C (a second one ends it at once)."""
    host = prepare(app, broker, only=list(only), pools=pools)
    configure_logging(log_format, log_level, host=host.name)
    limits = RecycleLimits(
        max_messages=max_messages_per_process, max_memory_mb=max_memory_per_process
    )
    if child_index(os.environ) is None and wants_parent(processes, reload, limits):
        assert app is not None  # prepare() refused a missing APP
        code = run_processes(
            host,
            app=app,
            processes=processes,
            reload=reload,
            limits=limits,
            drain_timeout=drain_timeout,
            health_port=health_port,
            health_host=health_host,
            exit_on_trip=exit_on_trip,
        )
        sys.exit(code)
    become_child(host, os.environ)
    reminder = TrippedReminder(host, host.clock, exit_on_trip=exit_on_trip)
    host.subscribe(reminder)
    reminder.start()
    host.drain_timeout = drain_timeout
    if health_port is not None:
        host.health_port = health_port
        host.health_host = health_host
    try:
        code = host.run()
    except ConfigError as exc:
        raise Fail(str(exc)) from None
    exit_program(code)


def exit_program(code: int) -> NoReturn:
    """Exit with ``code`` once the host has stopped, whatever threads the handlers left.

    A non-daemon thread a handler started would keep the interpreter alive after the drain
    (until the platform's SIGKILL, with no exit code worth reading): flush what was logged and
    leave at once instead. With no such thread, exit the ordinary way.
    """
    main = threading.main_thread()
    left = [t.name for t in threading.enumerate() if not t.daemon and t is not main]
    if not left:
        sys.exit(code)
    structlog.get_logger("consumer_host").warning("threads_abandoned", threads=left, exit_code=code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
