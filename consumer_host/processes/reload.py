"""``--reload``: recycle the children when a Python source file under the app changes.

For development only. The watcher is one more supervised worker of the process parent; a change
asks every child to drain and start again, with the same drain as a SIGTERM.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from consumer_host.errors import ConfigError

_log = structlog.get_logger("consumer_host.reload")

MISSING = "--reload needs watchfiles: pip install 'consumer-host[reload]'"


def require_watchfiles() -> None:
    """Raise a one-line :class:`ConfigError` when watchfiles is not installed."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING) from None


def app_directory(spec: str) -> Path:
    """The directory to watch for APP (``path/app.py[:attr]`` or ``package.module[:attr]``).

    Call after the app was imported: a module's file is then known.
    """
    target = spec if Path(spec).is_file() else spec.rsplit(":", 1)[0]
    if target.endswith(".py") or "/" in target:
        return Path(target).resolve().parent
    origin = getattr(sys.modules.get(target), "__file__", None)
    return Path(origin).resolve().parent if origin else Path.cwd()


class SourceWatcher:
    """A worker that calls ``on_change(paths)`` whenever ``*.py`` files under ``roots`` change."""

    name = "reload"

    def __init__(self, roots: Sequence[Path], on_change: Callable[[list[str]], None]) -> None:
        self.roots = list(roots)
        self._on_change = on_change

    def run(self, stop: threading.Event) -> None:
        from watchfiles import PythonFilter, watch

        _log.info("reload_watching", paths=[str(root) for root in self.roots])
        for changes in watch(
            *self.roots, watch_filter=PythonFilter(), stop_event=stop, raise_interrupt=False
        ):
            paths = sorted({path for _change, path in changes})
            _log.info("reload_changed", paths=paths)
            self._on_change(paths)
