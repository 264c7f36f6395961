"""The signals a host run as a program answers: SIGTERM, SIGINT and SIGHUP drain it (a second
one ends it at once), SIGTSTP quiets it.

A handler only records what arrived: acting inside it (a log write, even an ``Event.set()``)
could deadlock on a lock the interrupted main thread holds. The host's main loop reads the
flags a few times a second and acts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import structlog

from consumer_host.supervision.supervisor import STOP_SIGNALS

_log = structlog.get_logger("consumer_host.host")


class ProgramSignals:
    """Installs the handlers on the main thread, records what arrived, restores on exit."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._seen = 0
        self.stop_requested: str | None = None
        """The name of the first stop signal, once one arrived."""
        self.quiet_requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # SIGHUP too: a closed terminal or a supervisor's reload must drain, not kill.
        for signum in sorted(STOP_SIGNALS):
            self._previous[signum] = signal.signal(signum, self._on_stop)
        # SIGTSTP quiets the host (Sidekiq's convention) instead of suspending it.
        self._previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, self._on_quiet)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_quiet(self, _signum: int, _frame: FrameType | None) -> None:
        self.quiet_requested = True

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._seen += 1
        name = signal.Signals(signum).name
        if self._seen == 1:
            self.stop_requested = name
            return
        try:
            _log.warning("host_killed", host=self._host, signal=name, exit_code=128 + signum)
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - e.g. a reentrant flush: exiting matters more
            pass
        finally:
            # Unacked messages go back to their queues when the broker sees the connections close.
            os._exit(128 + signum)
