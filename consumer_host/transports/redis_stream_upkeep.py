"""Keeping a stream and its consumer group tidy: trimming what no group needs, forgetting
consumers that left nothing behind. Run now and then by every consumer of the stream."""

from __future__ import annotations

import redis

from .redis_common import text


def trim(client: redis.Redis, stream: str) -> None:
    """Drop entries no group needs any more: never one that is pending or unread."""
    floor: str | None = None
    for group in client.xinfo_groups(stream):
        needed = None
        if group["pending"]:
            # Another consumer may ack in between, leaving no oldest pending entry.
            needed = client.xpending(stream, group["name"])["min"]
        if needed is None:
            needed = _next_id(group["last-delivered-id"])
        candidate = text(needed)
        if floor is None or _id_key(candidate) < _id_key(floor):
            floor = candidate
    if floor is not None:
        client.xtrim(stream, minid=floor, approximate=True)


def forget_stale_consumers(
    client: redis.Redis, stream: str, group: str, *, keep: str, idle: float
) -> None:
    """Delete the group's consumers (other than ``keep``) that own nothing and were idle for
    ``idle`` seconds: deleting one that still owned entries would drop them."""
    for info in client.xinfo_consumers(stream, group):
        name = text(info["name"])
        if name != keep and info["pending"] == 0 and info["idle"] > idle * 1000:
            client.xgroup_delconsumer(stream, group, name)


def _id_key(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def _next_id(entry_id: bytes | str) -> str:
    millis, seq = _id_key(text(entry_id))
    return f"{millis}-{seq + 1}"
