"""``Host.publish``: one publisher per host on the host's broker, shared by every thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypedDict

from consumer_host.transports.publisher import Publisher


class PublishKeywords(TypedDict, total=False):
    """``Host.publish``'s keywords (those of :meth:`Publisher.publish`)."""

    headers: dict[str, Any] | None
    message_id: str | None


class HostPublisher:
    """A :class:`Publisher` opened on first use, on the broker the host's consumers use, with
    the host's middleware; a lock makes it safe from handler threads and tasks alike."""

    def __init__(self, url: Callable[[], str], middleware: Iterable[Any]) -> None:
        self._url = url
        self._middleware = middleware
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        with self._lock:
            if self._publisher is None:
                self._publisher = Publisher(self._url(), middleware=list(self._middleware))
            try:
                return self._publisher.publish(queue, body, headers=headers, message_id=message_id)
            except Exception:
                # The connection may be broken: the next publish opens a fresh one.
                self._close()
                raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
