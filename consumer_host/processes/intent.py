"""What the operator set (pause, quiet) as state of the host, not of one child process.

Under ``--processes`` the parent holds an :class:`OperatorIntent`. Every child is spawned with it
in its environment (``CONSUMER_HOST_PROCESS_INTENT``) and applies it when its host starts, before
any consumer takes a message: a child restarted after a crash, recycled, or reloaded comes up
paused or quiet, and its /readyz and /status say so from its first moment. A change made while a
child was being spawned reaches it on the parent's next poll (see :meth:`OperatorIntent.sync`).

Not durable past the parent: a whole-host restart (a deploy) starts with nothing paused. The
intent lives in the parent's memory only, by choice: a pause that outlived a deploy would need
state in the broker that every host of a fleet agrees on, and a forgotten pause there would stop
a queue with nobody watching; to keep a consumer off across deploys, leave it out (``--only``)
or scale it to zero.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from consumer_host.errors import ConfigError
from consumer_host.supervision.events import Event, HostStarted

#: The environment variable a child reads the parent's intent from.
INTENT_ENV = "CONSUMER_HOST_PROCESS_INTENT"

#: ``post(port, path)``: a control call to a child's health server, its answer or ``None``.
Post = Callable[[int, str], dict[str, Any] | None]

_log = structlog.get_logger("consumer_host.processes")


class OperatorIntent:
    """Paused consumers and quiet, with a version that moves on every change (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused: set[str] = set()
        self._quiet = False
        self.version = 0

    def pause(self, name: str) -> None:
        with self._lock:
            self._paused.add(name)
            self.version += 1

    def resume(self, name: str) -> None:
        with self._lock:
            self._paused.discard(name)
            self.version += 1

    def quiet(self) -> None:
        with self._lock:
            self._quiet = True
            self.version += 1

    def snapshot(self) -> tuple[int, frozenset[str], bool]:
        with self._lock:
            return self.version, frozenset(self._paused), self._quiet

    def to_env(self) -> tuple[int, dict[str, str]]:
        """The version and the environment a child is spawned with."""
        version, paused, quiet = self.snapshot()
        document = {"paused": sorted(paused), "quiet": quiet}
        return version, {INTENT_ENV: json.dumps(document)}

    def sync(self, port: int, post: Post, consumers: Iterable[str]) -> bool:
        """Tell a running child the whole intent (it was spawned with an older one); ``True``
        once it took every call."""
        _version, paused, quiet = self.snapshot()
        calls = [f"/consumers/{name}/pause" for name in sorted(paused)]
        if quiet:
            calls.append("/quiet")
        else:
            calls += [f"/consumers/{name}/resume" for name in consumers if name not in paused]
        return all(post(port, path) is not None for path in calls)


def read_intent(env: Mapping[str, str]) -> tuple[frozenset[str], bool]:
    """The paused consumers and quiet a child was spawned with (nothing for a bad value)."""
    raw = env.get(INTENT_ENV)
    if not raw:
        return frozenset(), False
    try:
        document = json.loads(raw)
        paused = frozenset(str(name) for name in document.get("paused", ()))
        return paused, bool(document.get("quiet", False))
    except (ValueError, AttributeError, TypeError):
        _log.warning("process_intent_unreadable", variable=INTENT_ENV)
        return frozenset(), False


class IntentApplier:
    """A child's listener: when its host starts (before any consumer runs), pause what the
    parent holds paused and go quiet if the parent is quiet."""

    def __init__(self, host: Any, env: Mapping[str, str]) -> None:
        self._host = host
        self._paused, self._quiet = read_intent(env)

    @property
    def wanted(self) -> bool:
        return bool(self._paused) or self._quiet

    def __call__(self, event: Event) -> None:
        if not isinstance(event, HostStarted):
            return
        if self._quiet:
            self._host.quiet(wait=0)
        for name in sorted(self._paused):
            try:
                self._host.pause(name, wait=0)
            except ConfigError:
                continue  # not a consumer of this child (``--only``): nothing to hold
