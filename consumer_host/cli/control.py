"""Commands that change what a running host does: pause, resume, quiet.

They call the host's control endpoints (``POST /consumers/NAME/pause`` ...), addressed like
``consumer-host status``, with the token from ``CONSUMER_HOST_CONTROL_TOKEN``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import click

from consumer_host.clock import SYSTEM_CLOCK
from consumer_host.operating.control import TOKEN_VARIABLE

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


def _intake_closed(url: str, worker: str | None) -> bool:
    """Wait (10 s at most) until /status shows the consumers' intake stopped."""
    deadline = SYSTEM_CLOCK.now() + 10.0
    while True:
        code, document = get_json(url, "/status")
        records = [
            r
            for r in document.get("instances", [])
            if "queue" in r and (worker is None or r.get("worker") == worker)
        ]
        if code == 200 and all(r.get("paused") and not r.get("consuming") for r in records):
            return True
        if SYSTEM_CLOCK.now() > deadline:
            return False
        threading.Event().wait(0.1)


@click.command()
@click.argument("name")
@url_option
def pause(name: str, url: str) -> None:
    """Stop consumer NAME taking messages (in-flight ones finish; the rest stay queued)."""
    document = _call(url, f"/consumers/{name}/pause")
    closed = _intake_closed(url, name)
    note = "" if closed else " (intake is still closing: a fetch or a give-back is slow)"
    click.echo(f"paused {_instances(document)}{note}")


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
    closed = _intake_closed(url, None)
    note = "" if closed else " (intake is still closing)"
    click.echo(
        f"quiet: no consumer takes new messages; stop the host when in-flight work ends{note}"
    )
