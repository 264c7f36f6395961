"""Commands that look at an app or a running host: list, check, status, health."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import click

from consumer_host.errors import BrokerError
from consumer_host.hosting.registry import Registration
from consumer_host.transports.broker import dead_letter_name

from .common import (
    BrokerFail,
    app_argument,
    broker_from,
    broker_option,
    get_json,
    load,
    prepare,
    table,
    url_option,
)


@click.command("list")
@app_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@broker_option
def list_(app: str | None, as_json: bool, broker: str | None) -> None:
    """Show APP's workers, expanded into their instances.

    Dead-letter queues are named as they are on the broker (``{orders}.dlq`` on a Redis
    Cluster); the broker is chosen as ``run`` chooses it, and never contacted."""
    host = load(app)
    url = broker_from(broker, code=host.broker).url
    rows = [
        {
            "instance": instance,
            "worker": reg.name,
            "kind": reg.kind,
            "pool": reg.options.pool,
            "critical": reg.options.critical,
            **dict(reg.details),
            **partitioning(reg.consumer_options),
            **dead_letter_on(url, reg),
        }
        for reg in host.registry.registrations
        for instance in reg.instance_names()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = ["instance", "kind", "queue", "pool", "concurrency", "partition_by", "critical"]
    table(rows, [*columns, "dead_letter", "prefetch", "max_retries"])


def partitioning(options: Any) -> dict[str, str]:
    """A consumer's ``partition_by`` as the name of its function (nothing for workers)."""
    key = getattr(options, "partition_by", None)
    if key is None:
        return {}
    return {"partition_by": getattr(key, "__qualname__", None) or repr(key)}


def dead_letter_on(url: str, reg: Registration) -> dict[str, str]:
    """A consumer's dead-letter queue by its real name on the broker at ``url`` (nothing for
    plain workers)."""
    options = reg.consumer_options
    if options is None:
        return {}
    return {"dead_letter": dead_letter_name(url, options.queue, options.dead_letter_queue)}


@click.command()
@app_argument
@broker_option
def check(app: str | None, broker: str | None) -> None:
    """Connect, declare every queue and dead-letter queue, print their depths; exit 0 or 1."""
    host = prepare(app, broker, only=[], pools=())
    choice = host.broker_choice
    rows = []
    failed = False
    for reg in host.registry.registrations:
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
    table(rows, ["worker", "queue", "messages"])
    click.echo(f"ok: {choice.redacted} ({choice.source})")


@click.command()
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the /status document as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every 2 seconds until Ctrl-C.")
def status(url: str, as_json: bool, watch: bool) -> None:
    """Show a running host's instances and broker circuits (from its /status)."""
    while True:
        code, document = get_json(url, "/status")
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


@click.command()
@url_option
@click.option("--ready", is_flag=True, help="Check readiness (/readyz) instead of liveness.")
def health(url: str, ready: bool) -> None:
    """Exit 0 if a running host is live (or ready), 1 if not: for exec probes."""
    path = "/readyz" if ready else "/healthz"
    code, document = get_json(url, path)
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
    "paused": "yellow",
    "kill switch open": "red",
    "kill switch probing": "yellow",
}


def _shown_state(record: dict[str, Any]) -> str:
    """The supervisor's state, or what keeps a running consumer from taking messages."""
    state = str(record["state"])
    if state != "running":
        return state
    if record.get("paused"):
        return "paused"
    switch = record.get("kill_switch")
    if switch in ("open", "probing"):
        return f"kill switch {switch}"
    return state


def _render_status(document: dict[str, Any]) -> None:
    flags = []
    if document.get("stopping"):
        flags.append(click.style("draining", fg="yellow"))
    if document.get("quiet"):
        flags.append(click.style("quiet", fg="yellow"))
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
                **({"process": record["process"]} if "process" in record else {}),
                "instance": record["instance"],
                "state": _shown_state(record),
                "restarts": record["restarts"],
                "queue": record.get("queue", ""),
                "acked": record.get("acked", ""),
                "retried": record.get("retried", ""),
                "dead": record.get("dead_lettered", ""),
                "stuck": len(record["stuck"]) if record.get("stuck") else "",
                "last error": (record.get("last_error") or "")[:60],
            }
        )
    # table() leaves out the columns no row has: "process" shows under --processes only.
    columns = ["process", "instance", "state", "restarts", "queue", "acked", "retried", "dead"]
    columns += ["stuck", "last error"]
    table(rows, columns, color={"state": _STATE_COLORS})
    for broker, state in document.get("brokers", {}).items():
        colour = {"closed": "green", "half_open": "yellow", "open": "red"}.get(state)
        click.echo(f"broker {broker}: circuit {click.style(state, fg=colour)}")
