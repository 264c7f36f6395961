"""When a child is replaced by a fresh one: the limits, and what the parent reads to apply them."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RecycleLimits:
    """When a child is replaced by a fresh one (Celery's max-tasks/max-memory per child)."""

    max_messages: int | None = None
    max_memory_mb: float | None = None

    @property
    def any(self) -> bool:
        return self.max_messages is not None or self.max_memory_mb is not None


def recycle_reason(limits: RecycleLimits, *, handled: int, rss_mb: float | None) -> str | None:
    """Why a child must be recycled now, or ``None``.

    Memory only counts once the child has handled a message: a fresh child already over the
    limit would otherwise be replaced forever without doing any work.
    """
    if limits.max_messages is not None and handled >= limits.max_messages:
        return f"handled {handled} messages (limit {limits.max_messages})"
    if (
        limits.max_memory_mb is not None
        and rss_mb is not None
        and handled > 0
        and rss_mb > limits.max_memory_mb
    ):
        return f"resident memory {rss_mb:.1f} MB (limit {limits.max_memory_mb:g} MB)"
    return None


def resident_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (``/proc``, else ``ps``), ``None`` when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(  # noqa: S603 - a fixed command, our own child's pid
            ["ps", "-o", "rss=", "-p", str(pid)],  # noqa: S607 - ps from PATH, as a fallback
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        ).stdout.strip()
        return int(out) / 1024 if out else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def handled_count(status: Mapping[str, Any]) -> int:
    """Messages a child has settled: acked + retried + dead-lettered over its instances."""
    return sum(
        int(record.get(key, 0))
        for record in status.get("instances", ())
        for key in ("acked", "retried", "dead_lettered")
    )
