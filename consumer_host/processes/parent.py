"""``consumer-host run --processes N``: a parent host whose workers are child host processes.

Past the GIL: every child runs the whole host (same app, same flags, instance names unchanged),
and the parent is a :class:`~consumer_host.host.Host` whose N critical workers are
:class:`~consumer_host.child_process.ChildProcess` objects. So a child that dies is restarted
with the supervisor's backoff, a crash loop trips its restart circuit, and a tripped child shuts
the parent down with exit code 1, exactly as for any worker.

The parent owns the signals (SIGTERM, SIGINT, SIGHUP: one SIGTERM to every child, one drain
deadline, SIGKILL past it; a second signal SIGKILLs the children and exits 128+N; SIGTSTP quiets
every child, now and every child it starts later, as ``consumer-host quiet`` does) and the only
health server a platform sees, which aggregates the children's (see ``process_health``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from consumer_host._version import __version__
from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import ConfigError
from consumer_host.host import Host
from consumer_host.hosting.lifecycle import EXIT_DRAIN_TIMEOUT, EXIT_OK
from consumer_host.supervision.events import Event, HostStarted

from . import health as process_health
from .budget import budget_from
from .child import ChildProcess
from .intent import IntentApplier, OperatorIntent
from .orphans import die_with_parent
from .reload import SourceWatcher

#: The environment a child learns its place from.
INDEX_ENV = "CONSUMER_HOST_PROCESS_INDEX"
PORT_FILE_ENV = "CONSUMER_HOST_PROCESS_PORT_FILE"
PARENT_ENV = "CONSUMER_HOST_PROCESS_PARENT"

_log = structlog.get_logger("consumer_host.processes")

#: How often the signal relay looks for a flag a handler set.
_RELAY_TICK = 0.2


class ProcessParent(Host):
    """A host that supervises child host processes and aggregates their health."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildProcess],
        *,
        drain_timeout: float,
        health_port: int | None = None,
        health_host: str = "0.0.0.0",  # noqa: S104 - probes come from off-host
        watcher: SourceWatcher | None = None,
        clock: Clock = SYSTEM_CLOCK,
        consumers: Sequence[str] = (),
        control_token: str | None = None,
        intent: OperatorIntent | None = None,
    ) -> None:
        super().__init__(
            name,
            drain_timeout=drain_timeout,  # the whole stop: children drain for less (budget.py)
            health_port=health_port,
            health_host=health_host,
            clock=clock,
            control_token=control_token,
        )
        self.children = list(children)
        self.intent = OperatorIntent() if intent is None else intent
        """Pause and quiet as the operator set them: every child (re)spawned starts with it."""
        self._app_consumers = list(consumers)
        for child in self.children:
            self.register(child, critical=True)
        if watcher is not None:
            self.register(watcher)
        self._began: float | None = None
        # /metrics is the children's, merged, plus the parent's own process families.
        self.metrics.registry = CollectorRegistry(auto_describe=False)
        self.metrics.registry.register(process_health.ChildrenMetrics(self.children))

    def start(self) -> None:
        self._began = self.clock.now()
        super().start()

    def recycle_all(self, reason: str) -> None:
        """Drain every child and start a fresh one (``--reload`` on a source change)."""
        for child in self.children:
            child.request_recycle(reason)

    def kill_children(self) -> None:
        for child in self.children:
            child.kill()

    @property
    def unclean_stop(self) -> bool:
        """Some child did not drain in time (it exited non-zero, or was killed at the deadline)."""
        return any(child.unclean_stop for child in self.children)

    def consumer_names(self) -> list[str]:
        return self._app_consumers

    def pause(self, name: str, *, wait: float = 0.0) -> list[str]:
        """Pause ``name`` in every child (each pauses its own instances), now and in every
        child spawned from now on."""
        self._known(name, "pause")
        self.intent.pause(name)
        return self._tell_children(f"/consumers/{name}/pause")

    def resume(self, name: str) -> list[str]:
        self._known(name, "resume")
        if self.is_quiet:
            raise ConfigError(f"cannot resume {name!r}: the host is quiet until it restarts")
        self.intent.resume(name)
        return self._tell_children(f"/consumers/{name}/resume")

    def quiet(self, *, wait: float = 0.0) -> None:
        self.controls.quiet_requested = True
        self.intent.quiet()
        if self.control_token is None:
            # No control API on the children (SIGTSTP without a token): a child's own SIGTSTP
            # quiets it the same way. One still starting is told when it reports its port.
            for child in self.children:
                child.quiet_by_signal(self.intent.version)
            return
        self._tell_children("/quiet")

    def _known(self, name: str, action: str) -> None:
        # Refused here, before the intent changes: a child would refuse it anyway.
        if self._app_consumers and name not in self._app_consumers:
            known = ", ".join(self._app_consumers)
            raise ConfigError(f"cannot {action} {name!r}: no consumer of that name ({known})")

    def _tell_children(self, path: str) -> list[str]:
        instances: list[str] = []
        version = self.intent.version  # read before the calls: a later change is told later
        for child in self.children:
            if child.port is None or self.control_token is None:
                continue
            answer = process_health.post_json(child.port, path, token=self.control_token)
            if answer is None:
                raise ConfigError(f"process {child.index} did not take {path}")
            child.told_intent(version)
            instances += [f"{name}@{child.index}" for name in answer.get("instances", [])]
        return instances

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        return process_health.liveness(self.children)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self._began is None:
            return False, {"reason": "not started"}
        if self.is_quiet:
            return False, {"reason": "quiet"}
        return process_health.readiness(self.children, draining=self.stopping)

    def status_document(self) -> dict[str, Any]:
        statuses = process_health.child_statuses(self.children)
        merged = process_health.merged_status(self.children, self.status(), statuses)
        ready = (
            self._began is not None
            and not self.is_quiet
            and process_health.readiness(self.children, draining=self.stopping, statuses=statuses)[
                0
            ]
        )
        uptime = 0.0 if self._began is None else self.clock.now() - self._began
        return {
            "host": self.name,
            "version": __version__,
            "uptime": round(uptime, 3),
            "stopping": self.stopping,
            "quiet": self.is_quiet,
            "ready": ready,
            "live": process_health.liveness(self.children, statuses=statuses)[0],
            **merged,
        }


def run_parent(parent: ProcessParent) -> int:
    """Run the parent as the program: signals, supervision, drain; return the exit code."""
    signals = _ParentSignals(parent)
    restore = signals.install()
    try:
        code = parent.run(install_signal_handlers=False)
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
    if code == EXIT_OK and parent.unclean_stop:
        code = EXIT_DRAIN_TIMEOUT
    return code


class _ParentSignals:
    """First signal: a graceful stop of every child. Second: SIGKILL them all, exit 128+N.
    SIGTSTP: quiet every child (the default action would stop the parent and leave the
    children consuming, its health server unanswered)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, parent: ProcessParent) -> None:
        self._parent = parent
        self._seen = 0
        self._first = threading.Event()
        self._quiet = False
        self._name = ""

    def install(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        threading.Thread(target=self._relay, name="consumer-host-signals", daemon=True).start()
        previous: dict[int, Any] = {
            signum: signal.signal(signum, self._on_signal) for signum in self.SIGNALS
        }
        previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_quiet)
        return previous

    def _relay(self) -> None:
        # The handlers only flag: one may have interrupted the main thread inside a lock or a
        # log write, so the quiet and the shutdown themselves are started from here.
        while not self._first.wait(_RELAY_TICK):
            if self._parent.done.is_set():
                return
            if self._quiet and not self._parent.is_quiet:
                self._quiet_children()
        self._parent.shutdown(f"{self._name} received")

    def _quiet_children(self) -> None:
        try:
            self._parent.quiet()
        except ConfigError as exc:  # a child did not take it: it catches up on its next poll
            _log.warning("quiet_incomplete", host=self._parent.name, error=str(exc))

    def _on_quiet(self, _signum: int, _frame: FrameType | None) -> None:
        self._quiet = True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._seen += 1
        if self._seen == 1:
            self._name = signal.Signals(signum).name
            self._first.set()
            return
        self._parent.kill_children()
        try:
            _log.warning("host_killed", signal=signal.Signals(signum).name, exit_code=128 + signum)
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - e.g. a reentrant flush: exiting matters more
            pass
        finally:
            os._exit(128 + signum)


# -- the child's side -------------------------------------------------------------------------


def child_index(env: Mapping[str, str]) -> int | None:
    """This process's index when it is a child of ``--processes``, else ``None``."""
    value = env.get(INDEX_ENV)
    return int(value) if value and value.isdigit() else None


def become_child(host: Host, env: Mapping[str, str]) -> None:
    """Make this host a child: logs carry ``process``, the health port goes to the parent, and
    the host drains by itself if the parent disappears (SIGKILLed parents leave no orphans)."""
    index = child_index(env)
    if index is None:
        return
    tag_logs("process", index)
    host.lifecycle.drain_budget = budget_from(env)
    # Before anything else hears HostStarted: no consumer may start unpaused.
    host.subscribe(IntentApplier(host, env))
    port_file = env.get(PORT_FILE_ENV)
    if port_file:
        host.subscribe(_PortReporter(host, Path(port_file)))
    parent = env.get(PARENT_ENV, "")
    if parent.isdigit():
        # Quiet is the host's: a SIGTSTP sent to this child alone quiets every child, and the
        # ones the parent starts later (a quiet parent ignores the echo of its own SIGTSTP).
        host.lifecycle.on_quiet_signal.append(lambda: _tell_parent_quiet(int(parent)))
    # The kernel's parent-death signal where it has one; else a thread polls. Not both: two
    # SIGTERMs would end the child's drain at once.
    if parent.isdigit() and not die_with_parent(int(parent)):
        threading.Thread(
            target=_watch_parent, args=(host, int(parent)), name="consumer-host-parent", daemon=True
        ).start()


def tag_logs(key: str, value: Any) -> None:
    """Add ``key=value`` to every log line from now on (structlog's and the stdlib's).

    Threads do not inherit context variables, so a bound contextvar would miss the workers'
    lines; the root handler's formatter sees every line.
    """

    def add(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
        event_dict.setdefault(key, value)
        return event_dict

    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, structlog.stdlib.ProcessorFormatter):
            formatter.processors = [add, *formatter.processors]


class _PortReporter:
    """Writes the health server's real port where the parent looks for it, once started."""

    def __init__(self, host: Host, path: Path) -> None:
        self._host = host
        self._path = path

    def __call__(self, event: Event) -> None:
        if not isinstance(event, HostStarted):
            return  # before the port: a closed server's socket has none (EBADF at exit)
        port = self._host.health_server_port
        if port is None:
            return
        partial = self._path.with_suffix(".tmp")
        partial.write_text(str(port))
        partial.replace(self._path)  # the parent never reads half a number


def _tell_parent_quiet(parent: int) -> None:
    if os.getppid() != parent:
        return  # the parent is gone: its pid may be someone else's by now
    with contextlib.suppress(OSError):  # it ended meanwhile
        os.kill(parent, signal.SIGTSTP)


def _watch_parent(host: Host, parent: int) -> None:
    while not SYSTEM_CLOCK.wait(host.done, 1.0):
        if os.getppid() != parent:
            _log.warning("parent_gone", parent=parent)
            os.kill(os.getpid(), signal.SIGTERM)
            return
