"""``run``'s process options: --processes, recycling limits and --reload, and the parent they start.

A child is ``python -m consumer_host run APP`` with the parent's own flags (those given on the
command line or through the environment), minus the ones only the parent acts on, plus a
loopback health server on an ephemeral port that the parent reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from consumer_host.errors import ConfigError
from consumer_host.host import Host
from consumer_host.operating.control import TOKEN_VARIABLE
from consumer_host.processes.budget import DrainBudget
from consumer_host.processes.child import ChildProcess, ChildSpec, DrainDeadline
from consumer_host.processes.health import post_json
from consumer_host.processes.intent import OperatorIntent
from consumer_host.processes.parent import ProcessParent, run_parent
from consumer_host.processes.recycling import RecycleLimits
from consumer_host.processes.reload import SourceWatcher, app_directory, require_watchfiles

from .common import Fail, FiniteFloat

F = TypeVar("F", bound=Callable[..., Any])

#: Options the parent acts on and a child must not see again.
PARENT_ONLY = {
    "processes": "CONSUMER_HOST_PROCESSES",
    "max_messages_per_process": "CONSUMER_HOST_MAX_MESSAGES_PER_PROCESS",
    "max_memory_per_process": "CONSUMER_HOST_MAX_MEMORY_PER_PROCESS",
    "reload": "CONSUMER_HOST_RELOAD",
    "health_port": "CONSUMER_HOST_HEALTH_PORT",
    "health_host": "CONSUMER_HOST_HEALTH_HOST",
}


def process_options(fn: F) -> F:
    """Add --processes, --max-messages-per-process, --max-memory-per-process and --reload."""
    options = [
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            default=1,
            envvar="CONSUMER_HOST_PROCESSES",
            show_envvar=True,
            help="Run N child host processes under one supervising parent (CPU-bound handlers).",
        ),
        click.option(
            "--max-messages-per-process",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            envvar="CONSUMER_HOST_MAX_MESSAGES_PER_PROCESS",
            show_envvar=True,
            help="Replace a child by a fresh one once it has handled N messages (it drains).",
        ),
        click.option(
            "--max-memory-per-process",
            type=FiniteFloat(min=0, min_open=True),
            default=None,
            metavar="MB",
            envvar="CONSUMER_HOST_MAX_MEMORY_PER_PROCESS",
            show_envvar=True,
            help="Replace a child by a fresh one once its resident memory passes MB (it drains).",
        ),
        click.option(
            "--reload",
            is_flag=True,
            envvar="CONSUMER_HOST_RELOAD",
            show_envvar=True,
            help="Development: drain and restart when a *.py file in the app's directory "
            "changes (needs watchfiles).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def wants_parent(processes: int, reload: bool, limits: RecycleLimits) -> bool:
    """A parent is needed for more than one process, for recycling and for reloading."""
    return processes > 1 or reload or limits.any


def run_processes(
    host: Host,
    *,
    app: str,
    processes: int,
    reload: bool,
    limits: RecycleLimits,
    drain_timeout: float,
    health_port: int | None,
    health_host: str,
    exit_on_trip: bool = False,
) -> int:
    """Start the parent with ``processes`` children; return its exit code."""
    if reload:
        try:
            require_watchfiles()
        except ConfigError as exc:
            raise Fail(str(exc)) from None
    budget = DrainBudget(drain_timeout)
    port_dir = Path(tempfile.mkdtemp(prefix="consumer-host-"))
    try:
        spec = ChildSpec(
            # The last --drain-timeout wins: each child drains for its share of the stop.
            args=(*child_args(click.get_current_context()), "--drain-timeout", str(budget.child)),
            env={**child_env(os.environ), **budget.child_env()},
            port_dir=port_dir,
            limits=limits,
            wait_for_change_on_exit=reload,
            exit_on_trip=exit_on_trip,
        )
        parents: list[ProcessParent] = []

        def fatal(reason: str, code: int) -> None:
            parents[0].shutdown(reason, code)

        deadline = DrainDeadline(budget.kill_after)
        token = os.environ.get(TOKEN_VARIABLE) or None
        intent = OperatorIntent()
        consumers = tuple(host.consumer_names())

        def tell(port: int, path: str) -> dict[str, Any] | None:
            return None if token is None else post_json(port, path, token=token)

        # Without a token the children have no control API: quiet reaches them by SIGTSTP.
        teller = None if token is None else tell

        children = [
            ChildProcess(
                index,
                spec,
                deadline=deadline,
                on_fatal=fatal,
                intent=intent,
                tell=teller,
                consumers=consumers,
            )
            for index in range(1, processes + 1)
        ]
        watcher = None
        if reload:
            watcher = SourceWatcher(
                [app_directory(app)],
                lambda paths: parents[0].recycle_all(f"changed: {', '.join(paths)}"),
            )
        parents.append(
            ProcessParent(
                host.name,
                children,
                drain_timeout=drain_timeout,
                health_port=health_port,
                health_host=health_host,
                watcher=watcher,
                consumers=list(consumers),
                control_token=token,
                intent=intent,
            )
        )
        try:
            return run_parent(parents[0])
        except ConfigError as exc:  # the health port is taken, ...: one line, exit 2
            raise Fail(str(exc)) from None
    finally:
        shutil.rmtree(port_dir, ignore_errors=True)


def child_args(ctx: click.Context) -> list[str]:
    """``run APP`` and every option the user set, as flags, except the parent's own."""
    args = ["run", str(ctx.params["app"])]
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name is None or name in PARENT_ONLY:
            continue
        value = ctx.params.get(name)
        if value is None or ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            continue  # the child computes the same default
        flag = param.opts[0]
        if param.is_flag and not param.count:
            if value:
                args.append(flag)
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        for item in value if param.multiple else (value,):
            args += [flag, str(item)]
    return [*args, "--health-port", "0", "--health-host", "127.0.0.1"]


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without the variables only the parent acts on."""
    dropped = set(PARENT_ONLY.values())
    return {key: value for key, value in env.items() if key not in dropped}
