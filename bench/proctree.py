"""What a contestant's process tree holds right now: threads, CPU time, broker connections.

Read from /proc (Linux), so it works the same for every contestant without touching its code:
consumer-host with ``--processes``, Dramatiq's master and workers, Celery's worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

AMQP_PORT = 5672
REDIS_PORT = 6379
_ESTABLISHED = "01"
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One look at a process tree."""

    processes: int = 0
    threads: int = 0
    cpu_seconds: float = 0.0
    #: remote port -> local ports of this tree's established TCP connections to it
    connections: dict[int, set[int]] = field(default_factory=dict)

    def count(self, port: int) -> int:
        return len(self.connections.get(port, ()))


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _tcp_table() -> dict[str, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every established TCP connection."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != _ESTABLISHED:
                continue
            local = int(parts[1].rsplit(":", 1)[1], 16)
            remote = int(parts[2].rsplit(":", 1)[1], 16)
            table[parts[9]] = (local, remote)
    return table


def sample(root: int) -> Sample:
    """Threads, CPU seconds and broker connections of ``root``'s tree (vanished pids skipped)."""
    result = Sample()
    table = _tcp_table()
    for pid in tree(root):
        base = Path(f"/proc/{pid}")
        try:
            fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
            fds = list((base / "fd").iterdir())
        except OSError:
            continue
        result.processes += 1
        result.threads += int(fields[17])
        result.cpu_seconds += (int(fields[11]) + int(fields[12])) / _TICKS
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                ports = table.get(target[8:-1])
                if ports is not None:
                    result.connections.setdefault(ports[1], set()).add(ports[0])
    return result
