"""Partition lanes: messages with the same ``partition_by`` key never run at the same time, and
run in the order they were fetched; different keys run side by side. A key stays taken while its
job runs and, with ``partition_order="strict"``, while a failed job waits for its retry (see
:mod:`.lane_retries`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from .handling import Job

_log = structlog.get_logger("consumer_host.consumer")

#: The key of messages whose key function raised: they share one lane.
UNKEYED = object()


class PartitionLanes:
    """Which keys have a job running, and the jobs waiting behind each."""

    def __init__(self, key_of: Callable[[Any], Any]) -> None:
        self._key_of = key_of
        self._lanes: dict[Any, deque[Job]] = {}  # key -> jobs waiting behind a running one
        self.waiting = 0  # jobs waiting behind another of their key, in every lane

    def admit(self, job: Job) -> bool:
        """Give ``job`` its key; ``True`` when it may run now, ``False`` when it waits."""
        job.key = self._key(job)
        waiting = self._lanes.get(job.key)
        if waiting is not None:
            waiting.append(job)
            self.waiting += 1
            return False
        self._lanes[job.key] = deque()
        return True

    def release(self, key: Any) -> Job | None:
        """The job with ``key`` finished: the next one of its lane, which may run now."""
        waiting = self._lanes.get(key)
        if not waiting:
            self._lanes.pop(key, None)
            return None
        self.waiting -= 1
        return waiting.popleft()

    def drop(self, key: Any) -> None:
        """The job holding ``key`` was taken back unstarted (its lane was emptied first)."""
        if not self._lanes.get(key):
            self._lanes.pop(key, None)

    def take_waiting(self) -> list[Job]:
        """Remove every waiting job; the keys of running jobs stay taken."""
        taken = [job for waiting in self._lanes.values() for job in waiting]
        for waiting in self._lanes.values():
            waiting.clear()
        self.waiting = 0
        return taken

    def _key(self, job: Job) -> Any:
        try:
            return self._key_of(job.message)
        except Exception:  # noqa: BLE001 - a key function that fails puts the message in one lane
            _log.warning("partition_key_failed", message_id=job.delivery.message_id, exc_info=True)
            return UNKEYED
