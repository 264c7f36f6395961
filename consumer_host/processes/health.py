"""The parent's view of its children: their /status, probes and /metrics, merged into one.

Each child serves its own health server on an ephemeral loopback port; the parent's health
server (the only one a platform probes) asks the children at request time, so what it answers is
never staler than the children themselves. A child that does not answer is not ready; a running
child whose health server stopped answering is not live.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from consumer_host.supervision.breaker import BreakerState

_TIMEOUT = 2.0

#: Each child's /status by process index; ``None`` for a child that did not answer.
Statuses = dict[int, dict[str, Any] | None]


class ChildView(Protocol):
    """What the parent's health server reads from one child process."""

    @property
    def index(self) -> int: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def recycles(self) -> int: ...
    @property
    def killed(self) -> int: ...
    @property
    def handled(self) -> int: ...
    @property
    def rss_mb(self) -> float | None: ...


def fetch(port: int, path: str, timeout: float = _TIMEOUT) -> tuple[int, bytes] | None:
    """GET ``path`` from a child's health server on loopback: (status, body), ``None`` if down."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def post_json(port: int, path: str, *, token: str) -> dict[str, Any] | None:
    """POST a control call to a child, with the host's token: its JSON answer, ``None`` if it
    did not answer 200."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
            document = json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def fetch_json(port: int, path: str, timeout: float = _TIMEOUT) -> dict[str, Any] | None:
    answer = fetch(port, path, timeout)
    if answer is None:
        return None
    try:
        document = json.loads(answer[1] or b"{}")
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def child_statuses(children: Sequence[ChildView]) -> Statuses:
    """Each child's /status now (``None``: not started yet, restarting, or not answering)."""
    out: Statuses = {}
    for child in children:
        port = child.port
        out[child.index] = None if port is None else fetch_json(port, "/status")
    return out


def liveness(
    children: Sequence[ChildView], *, statuses: Statuses | None = None
) -> tuple[bool, dict[str, Any]]:
    """Live when no running child reports a stuck instance or stops answering."""
    stuck: list[str] = []
    unreachable: list[int] = []
    statuses = child_statuses(children) if statuses is None else statuses
    for child in children:
        status = statuses[child.index]
        if child.port is None:
            continue  # starting or restarting: the supervisor is on it
        if status is None:
            unreachable.append(child.index)
        elif not status.get("live", True):
            stuck.append(f"process {child.index}")
    ok = not stuck and not unreachable
    return ok, {"stuck": stuck, "unreachable": unreachable} if not ok else {"stuck": []}


def readiness(
    children: Sequence[ChildView], *, draining: bool, statuses: Statuses | None = None
) -> tuple[bool, dict[str, Any]]:
    """Ready when every child is up and ready, and the parent is not draining."""
    if draining:
        return False, {"reason": "draining"}
    statuses = child_statuses(children) if statuses is None else statuses
    waiting = [
        child.index for child in children if not (statuses[child.index] or {}).get("ready", False)
    ]
    if waiting:
        return False, {"reason": "processes not ready", "processes": waiting}
    return True, {}


def merged_status(
    children: Sequence[ChildView], supervised: Sequence[dict[str, Any]], statuses: Statuses
) -> dict[str, Any]:
    """Every child's instances (each with a ``process`` field), the processes, the brokers.

    ``supervised`` is the parent's own ``status()``: one record per child-process worker.
    """
    by_name = {record["instance"]: record for record in supervised}
    instances: list[dict[str, Any]] = []
    brokers: dict[str, str] = {}
    processes: list[dict[str, Any]] = []
    for child in children:
        status = statuses[child.index] or {}
        for record in status.get("instances", ()):
            instances.append({**record, "process": child.index})
        for broker, state in status.get("brokers", {}).items():
            if brokers.get(broker, BreakerState.CLOSED.value) == BreakerState.CLOSED.value:
                brokers[broker] = state  # the worst state any child sees wins
        own = by_name.get(f"process-{child.index}", {})
        processes.append(
            {
                "process": child.index,
                "pid": child.pid,
                "state": own.get("state"),
                "restarts": own.get("restarts", 0),
                "last_error": own.get("last_error"),
                "recycles": child.recycles,
                "killed": child.killed,
                "handled": child.handled,
                "rss_mb": None if child.rss_mb is None else round(child.rss_mb, 1),
                "ready": status.get("ready", False),
                "live": status.get("live", True),
            }
        )
    return {"instances": instances, "brokers": brokers, "processes": processes}


class ChildrenMetrics(Collector):
    """Every child's /metrics merged into one exposition, each sample labelled ``process``."""

    def __init__(self, children: Sequence[ChildView]) -> None:
        self._children = children

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for child in self._children:
            port = child.port
            answer = None if port is None else fetch(port, "/metrics")
            if answer is None or answer[0] != 200:
                continue
            label = str(child.index)
            for family in text_string_to_metric_families(answer[1].decode()):
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples.extend(
                    s._replace(labels={**s.labels, "process": label}) for s in family.samples
                )
        yield from families.values()
        yield from _parent_families(self._children)


def _parent_families(children: Sequence[ChildView]) -> Iterator[Metric]:
    recycles = Metric("consumer_host_process_recycles", "Planned child replacements.", "counter")
    killed = Metric(
        "consumer_host_process_drain_kills", "Children killed at the drain deadline.", "counter"
    )
    rss = Metric("consumer_host_process_resident_bytes", "Child resident memory.", "gauge")
    for child in children:
        labels = {"process": str(child.index)}
        recycles.add_sample("consumer_host_process_recycles_total", labels, child.recycles)
        killed.add_sample("consumer_host_process_drain_kills_total", labels, child.killed)
        if child.rss_mb is not None:
            rss.add_sample(
                "consumer_host_process_resident_bytes", labels, child.rss_mb * 1024 * 1024
            )
    yield from (recycles, killed, rss)
