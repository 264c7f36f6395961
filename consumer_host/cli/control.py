"""Commands that change what a running host does: pause, resume, quiet.

They call the host's control endpoints (``POST /consumers/NAME/pause`` ...), addressed like
``consumer-host status``, with the token from ``CONSUMER_HOST_CONTROL_TOKEN``.
"""

from __future__ import annotations

import os
from typing import Any

import click

from consumer_host.control import TOKEN_VARIABLE

from .common import BrokerFail, Fail, get_json, url_option


def _instances(document: dict[str, Any]) -> str:
    return ", ".join(str(name) for name in document.get("instances") or [])


def _call(url: str, path: str) -> dict[str, Any]:
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise Fail(f"{TOKEN_VARIABLE} is not set: the host's control token is needed")
    code, document = get_json(
        url, path, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    if code == 200:
        return document
    if code == 401:
        raise Fail(f"{url}{path}: the host refused the token in {TOKEN_VARIABLE} (401)")
    if code == 404:
        raise Fail(
            f"{url}{path}: not found: no consumer of that name, or control is off on that host "
            f"(start it with {TOKEN_VARIABLE} set)"
        )
    raise BrokerFail(f"{url}{path} answered {code}: {document.get('error', document)}")


@click.command()
@click.argument("name")
@url_option
def pause(name: str, url: str) -> None:
    """Stop consumer NAME taking messages (in-flight ones finish; the rest stay queued)."""
    document = _call(url, f"/consumers/{name}/pause")
    click.echo(f"paused {_instances(document)}")


@click.command()
@click.argument("name")
@url_option
def resume(name: str, url: str) -> None:
    """Let a paused consumer NAME take messages again."""
    document = _call(url, f"/consumers/{name}/resume")
    click.echo(f"resumed {_instances(document)}")


@click.command()
@url_option
def quiet(url: str) -> None:
    """Stop every consumer taking messages and make /readyz 503, before a SIGTERM."""
    _call(url, "/quiet")
    click.echo("quiet: no consumer takes new messages; stop the host when in-flight work ends")
