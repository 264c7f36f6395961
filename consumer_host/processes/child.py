"""One child host process as a supervised worker: spawn it, watch it, recycle it, drain it.

The parent of ``consumer-host run --processes N`` registers one :class:`ChildProcess` per index
with an ordinary :class:`~consumer_host.supervisor.Supervisor`. ``run(stop)`` starts
``python -m consumer_host run APP ...`` and watches it:

- ``stop`` set: SIGTERM to the child (it drains: in-flight messages finish and are acked,
  prefetched ones go back to the broker), SIGKILL at the shared drain deadline, return.
- a recycle asked for (a limit crossed, or a source change under ``--reload``): the same drain,
  then a fresh child, all inside this ``run``: a planned restart is not a failure, so it never
  counts toward the restart circuit.
- the child ended by itself: :class:`ChildExited` is raised, and the supervisor does what it does
  for any worker (backoff, restart circuit, critical failure).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from consumer_host.clock import SYSTEM_CLOCK, Clock
from consumer_host.errors import ConsumerHostError
from consumer_host.hosting.lifecycle import EXIT_CRITICAL, EXIT_DRAIN_TIMEOUT

from .health import fetch_json
from .intent import OperatorIntent
from .recycling import RecycleLimits, handled_count, recycle_reason, resident_mb

__all__ = ["ChildExited", "ChildProcess", "ChildSpec", "DrainDeadline"]

#: Exit code of a child that met a usage or configuration error: restarting cannot fix it.
EXIT_USAGE = 2

_log = structlog.get_logger("consumer_host.processes")


class ChildExited(ConsumerHostError):
    """A child process ended without being asked to."""

    def __init__(self, index: int, code: int) -> None:
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        super().__init__(f"process {index} ended by itself ({how})")
        self.index = index
        self.code = code


class DrainDeadline:
    """One deadline for every child: set by the first child to start draining for a stop."""

    def __init__(self, timeout: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.timeout = timeout
        self._clock = clock
        self._at: float | None = None
        self._lock = threading.Lock()

    def at(self) -> float:
        with self._lock:
            if self._at is None:
                self._at = self._clock.now() + self.timeout
            return self._at


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """How to start a child and watch it."""

    args: tuple[str, ...]
    """Arguments after ``python -m consumer_host`` (``run APP ...``)."""
    env: Mapping[str, str]
    port_dir: Path
    """Where each child writes the port its health server bound."""
    limits: RecycleLimits = field(default_factory=RecycleLimits)
    poll_interval: float = 0.5
    wait_for_change_on_exit: bool = False
    """``--reload``: a child that ends by itself waits for the next change instead of failing."""
    exit_on_trip: bool = False
    """``--exit-on-trip``: a child that exits 1 (a tripped or lost worker) ends the parent too."""


#: ``on_fatal(reason, exit_code)``: a child met an error no restart can fix.
FatalHandler = Callable[[str, int], None]

_TICK = 0.05


class ChildProcess:
    """A supervised worker whose ``run`` is one child host process at a time."""

    def __init__(
        self,
        index: int,
        spec: ChildSpec,
        *,
        deadline: DrainDeadline,
        on_fatal: FatalHandler,
        clock: Clock = SYSTEM_CLOCK,
        intent: OperatorIntent | None = None,
        tell: Callable[[int, str], dict[str, Any] | None] | None = None,
        consumers: tuple[str, ...] = (),
    ) -> None:
        """``intent`` is the parent's pause/quiet, handed to every child it spawns; ``tell``
        posts a control call to a child that was spawned before the intent last changed."""
        self.index = index
        self.name = f"process-{index}"
        self.spec = spec
        self.recycles = 0
        self.killed = 0
        """Children SIGKILLed because they were still draining at the deadline."""
        self.unclean_stop = False
        """The final stop did not end in exit code 0 (the parent then exits 3, not 0)."""
        self.handled = 0
        self.rss_mb: float | None = None
        self._deadline = deadline
        self._on_fatal = on_fatal
        self._clock = clock
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._recycle = threading.Event()
        self._recycle_reason = ""
        self._tick = threading.Event()  # never set: a plain interruptible-by-nothing wait
        self._intent = intent
        self._tell = tell
        self._consumers = consumers
        self._intent_version = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    @property
    def port(self) -> int | None:
        """The child's health port, once it has reported it."""
        return self._port if self.pid is not None else None

    @property
    def port_file(self) -> Path:
        return self.spec.port_dir / f"{self.name}.port"

    def request_recycle(self, reason: str) -> None:
        """Drain this child and start a fresh one (from any thread)."""
        self._recycle_reason = reason
        self._recycle.set()

    def kill(self) -> None:
        """SIGKILL the child and whatever it started, at once (a second signal to the parent)."""
        process = self._process
        if process is not None and process.returncode is None:
            _signal(process, signal.SIGKILL, group=True)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._spawn()
            try:
                self._watch(stop)
            finally:
                if self.pid is not None:
                    self._drain()

    def _spawn(self) -> None:
        self._recycle.clear()
        self._port = None
        self.handled = 0
        self.port_file.unlink(missing_ok=True)
        env = {
            **self.spec.env,
            "CONSUMER_HOST_PROCESS_INDEX": str(self.index),
            "CONSUMER_HOST_PROCESS_PORT_FILE": str(self.port_file),
            "CONSUMER_HOST_PROCESS_PARENT": str(os.getpid()),
        }
        if self._intent is not None:
            # What the operator set outlives this process: the new one starts with it.
            self._intent_version, intent_env = self._intent.to_env()
            env.update(intent_env)
        # The supervisor's thread blocks SIGTERM and SIGINT, and a child inherits the mask:
        # unblock them while it is forked, or the child could never be asked to drain.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        try:
            # Its own process group: a Ctrl-C in the terminal reaches the parent only, which
            # then gives every child one SIGTERM (two would end a child's drain at once).
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "consumer_host", *self.spec.args],
                env=env,
                process_group=0,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        _log.info("process_started", process=self.index, pid=self._process.pid)

    def _watch(self, stop: threading.Event) -> None:
        """Return once the child has to go (stop or recycle); raise if it ended by itself."""
        next_poll = self._clock.now()
        while not stop.is_set():
            process = self._process
            assert process is not None
            code = process.poll()
            if code is not None:
                self._ended_by_itself(stop, code)
                if stop.is_set():
                    return
                self._spawn()  # --reload: a change came while it was down
                continue
            if self._recycle.is_set():
                self._recycle_now()
                continue
            if self._clock.now() >= next_poll:
                next_poll = self._clock.now() + self.spec.poll_interval
                self._poll()
            self._clock.wait(stop, _TICK)

    def _ended_by_itself(self, stop: threading.Event, code: int) -> None:
        _log.warning("process_exited", process=self.index, exit_code=code)
        if self.spec.wait_for_change_on_exit:
            _log.info("process_waiting_for_change", process=self.index)
            while not (stop.is_set() or self._recycle.is_set()):
                self._clock.wait(stop, _TICK)
            return
        if code == EXIT_USAGE:
            self._on_fatal(f"process {self.index}: configuration error (exit code 2)", code)
            stop.wait()
            return
        if code == EXIT_CRITICAL and self.spec.exit_on_trip:
            reason = f"process {self.index}: a worker tripped or was lost and --exit-on-trip is set"
            self._on_fatal(reason, code)
            stop.wait()
            return
        raise ChildExited(self.index, code)

    def _recycle_now(self) -> None:
        _log.info("process_recycling", process=self.index, reason=self._recycle_reason)
        killed_before = self.killed
        code = self._drain(deadline=self._clock.now() + self._deadline.timeout)
        self.recycles += 1
        planned = (0, EXIT_DRAIN_TIMEOUT, -signal.SIGTERM)  # a drain past its share is no crash
        if code not in planned and self.killed == killed_before:
            # Killed by someone else (the OOM killer, an operator) while it drained: a failure,
            # counted by the supervisor like any crash, not a planned recycle.
            _log.warning("process_exited", process=self.index, exit_code=code)
            raise ChildExited(self.index, code)
        _log.info("process_recycled", process=self.index, exit_code=code)
        self._spawn()

    def _poll(self) -> None:
        if self._port is None:
            self._port = _read_port(self.port_file)
            if self._port is None:
                return
        self._catch_up_intent(self._port)
        status = fetch_json(self._port, "/status")
        process = self._process
        if status is None or process is None:
            return
        self.handled = handled_count(status)
        self.rss_mb = resident_mb(process.pid)
        reason = recycle_reason(self.spec.limits, handled=self.handled, rss_mb=self.rss_mb)
        if reason is not None:
            self.request_recycle(reason)

    def told_intent(self, version: int) -> None:
        """The parent told this child the intent as of ``version`` (no catch-up needed)."""
        self._intent_version = max(self._intent_version, version)

    def quiet_by_signal(self, version: int) -> None:
        """Quiet the running child with SIGTSTP (its own handler quiets it), once it reported
        its port: by then its handlers are installed, and SIGTSTP's default action would stop
        it. A child not that far yet is quieted on a later poll."""
        process = self._process
        if self._port is None or process is None or process.returncode is not None:
            return
        _signal(process, signal.SIGTSTP)
        self.told_intent(version)

    def _catch_up_intent(self, port: int) -> None:
        """A pause or quiet that came while this child was being spawned (its port unknown, so
        the parent could not tell it) is told now."""
        intent, tell = self._intent, self._tell
        if intent is None or intent.version == self._intent_version:
            return
        if tell is None:  # no control token: only a quiet (SIGTSTP) can have come
            if intent.snapshot()[2]:
                self.quiet_by_signal(intent.version)
            return
        version = intent.version
        if intent.sync(port, tell, self._consumers):
            self._intent_version = version

    def _drain(self, deadline: float | None = None) -> int:
        """SIGTERM, wait until ``deadline`` (the shared one for a stop), SIGKILL; the exit code."""
        process = self._process
        assert process is not None
        if process.poll() is None:
            _signal(process, signal.SIGTERM)
            until = self._deadline.at() if deadline is None else deadline
            while process.poll() is None and self._clock.now() < until:
                self._clock.wait(self._tick, _TICK)
            if process.poll() is None:
                self.killed += 1
                _log.error("process_killed", process=self.index, pid=process.pid)
                _signal(process, signal.SIGKILL, group=True)
        code = process.wait()
        self.port_file.unlink(missing_ok=True)
        # Killed by our SIGTERM: it had not installed its handlers yet, so nothing was in flight.
        if deadline is None and code not in (0, -signal.SIGTERM):
            self.unclean_stop = True
            _log.error("process_drain_failed", process=self.index, exit_code=code)
        return code


def _signal(process: subprocess.Popen[bytes], signum: int, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except OSError:
        pass  # it is already gone


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None
