"""The ``consumer-host`` command group and its entry point.

User mistakes end with one line on stderr and exit code 2; a failure inside the user's own
module shows their traceback (they need it) and exits 2 as well. Each command lives in its own
module and is added to the group here.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from consumer_host import __version__
from consumer_host.errors import ConfigError

from .control import pause, quiet, resume
from .dlq import dlq
from .inspect import check, health, list_, status
from .publish import publish
from .run import run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, "-V", "--version", prog_name="consumer-host")
def cli() -> None:
    """Run long-lived message consumers as supervised, self-healing loops.

    APP is package.module:attr, package.module (attribute `host`) or path/to/app.py[:attr].

    Shell completion: eval "$(_CONSUMER_HOST_COMPLETE=bash_source consumer-host)" in ~/.bashrc
    (zsh_source in ~/.zshrc, fish_source for fish).
    """


for command in (run, list_, publish, check, status, health, pause, resume, quiet):
    cli.add_command(command)
cli.add_command(dlq)


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
    except ConfigError as exc:
        # A configuration the broker cannot take, found past the command's own checks (a
        # queue name too long for RabbitMQ, say): the user's mistake, in one line.
        click.echo(f"consumer-host: error: {exc}", err=True)
        sys.exit(2)
    sys.exit(0)
