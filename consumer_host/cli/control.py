"""Commands that change what a running host does: pause, resume, quiet.

They call the host's control endpoints (``POST /consumers/NAME/pause`` ...), addressed like
``consumer-host status``, with the token from ``CONSUMER_HOST_CONTROL_TOKEN``.
"""

from __future__ import annotations

import difflib
import os
import threading
from typing import Any

import click

from consumer_host.clock import SYSTEM_CLOCK
from consumer_host.operating.control import TOKEN_VARIABLE

from .common import BrokerFail, Fail, get_json, url_option


def _instances(document: dict[str, Any]) -> str:
    return ", ".join(str(name) for name in document.get("instances") or [])


#: Where the token comes from, for every message that needs it.
TOKEN_SOURCE = (
    f"the token is the value of {TOKEN_VARIABLE} in the host's environment when it started; "
    "this command sends the same variable from yours"
)


def _call(url: str, path: str, name: str | None = None) -> dict[str, Any]:
    token = os.environ.get(TOKEN_VARIABLE)
    if not token:
        raise Fail(f"{TOKEN_VARIABLE} is not set: {TOKEN_SOURCE}")
    code, document = get_json(
        url, path, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    if code == 200:
        return document
    if code == 401:
        raise Fail(f"{url}{path}: the host refused the token (401): {TOKEN_SOURCE}")
    if code == 404:
        raise Fail(_not_found(url, path, name))
    raise BrokerFail(f"{url}{path} answered {code}: {document.get('error', document)}")


def _not_found(url: str, path: str, name: str | None) -> str:
    """Why a control path is missing: a misspelt consumer (listed, with the nearest name), or
    control off on that host."""
    _code, document = get_json(url, "/status")
    consumers = sorted(
        {str(r["worker"]) for r in document.get("instances", []) if "queue" in r and "worker" in r}
    )
    if name is not None and consumers and name not in consumers:
        near = difflib.get_close_matches(name, consumers, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"no consumer named {name!r} on {url} (consumers: {', '.join(consumers)}){hint}"
    return (
        f"{url}{path}: not found: control is off on that host; start it with "
        f"{TOKEN_VARIABLE} set ({TOKEN_SOURCE})"
    )


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
    document = _call(url, f"/consumers/{name}/pause", name)
    closed = _intake_closed(url, name)
    note = "" if closed else " (intake is still closing: a fetch or a give-back is slow)"
    click.echo(f"paused {_instances(document)}{note}")


@click.command()
@click.argument("name")
@url_option
def resume(name: str, url: str) -> None:
    """Let a paused consumer NAME take messages again."""
    document = _call(url, f"/consumers/{name}/resume", name)
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
