"""The names of a queue's own Redis keys, on one node and on a Redis Cluster.

On a cluster every key one script touches must live in one slot. The queue key stays the plain
name kombu, Celery and other producers write (``orders``); the host's own keys for that queue
(processing lists, alive keys, the consumers set, the delayed set, held retries) carry the queue
name as hash tag, ``consumer-host:{orders}:...``, and the default dead-letter key becomes
``{orders}.dlq``: Redis hashes only what is inside the braces, so all of them share the slot of
``orders``. On one node (and on a Sentinel set) the names stay as they always were, so running
deployments keep their data.
"""

from __future__ import annotations

import dataclasses

from consumer_host.errors import ConfigError

from .base import QueueSpec
from .redis_urls import parse_redis_url


def on_cluster(url: str) -> bool:
    return parse_redis_url(url).topology == "cluster"


def own_prefix(url: str, queue: str) -> str:
    """``consumer-host:orders:`` on one node, ``consumer-host:{orders}:`` on a cluster."""
    return f"consumer-host:{{{queue}}}:" if on_cluster(url) else f"consumer-host:{queue}:"


def dead_letter_key(url: str, queue: str, dead_letter: str) -> str:
    """The default ``orders.dlq`` as ``{orders}.dlq`` on a cluster; a name the user chose is
    kept (it must carry ``{orders}`` itself to share the queue's slot)."""
    if on_cluster(url) and dead_letter == f"{queue}.dlq":
        return f"{{{queue}}}.dlq"
    return dead_letter


def cluster_spec(url: str, spec: QueueSpec) -> QueueSpec:
    """``spec`` with the dead-letter key named for ``url``'s topology. On a cluster a
    dead-letter key outside the queue's slot is refused: every dead-letter copy would fail."""
    named = dead_letter_key(url, spec.queue, spec.dead_letter)
    if on_cluster(url) and not _same_slot(named, spec.queue):
        raise ConfigError(
            f"queue {spec.queue!r}: on a Redis Cluster the dead-letter key must share the "
            f"queue's slot; name it with the queue as hash tag, e.g. '{{{spec.queue}}}.failed' "
            f"(got {spec.dead_letter!r})"
        )
    return spec if named == spec.dead_letter else dataclasses.replace(spec, dead_letter=named)


def _same_slot(key: str, other: str) -> bool:
    # Imported here: importing redis imports OpenTelemetry when it is installed, which
    # ``import consumer_host`` must not (tests/test_otel.py).
    from redis.crc import key_slot

    return bool(key_slot(key.encode()) == key_slot(other.encode()))
