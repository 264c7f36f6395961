"""Which redis-py errors mean "a failover is under way": read by exception class (redis-py
strips the error code from the text of the errors it maps to a class); by the error code only
inside a script's error, which redis-py leaves a plain ``ResponseError``.

These are temporary by nature: a replica being promoted (MASTERDOWN, CLUSTERDOWN, TRYAGAIN),
a connection still pointing at a primary that was demoted (READONLY), a blocked read the demoted
primary ended (UNBLOCKED), a node loading its data after a restart (LOADING), a slot that moved
(MOVED/ASK), or no primary known yet to the sentinels or the slot map. The consumer reconnects
(asking the sentinels or the cluster again) at a fast pace without counting them against the
broker circuit; see ``consuming/connection.py``.

UNBLOCKED is what a primary being demoted sends every client blocked in BLMOVE/XREADGROUP
("force unblock from blocking operation, instance state changed (master -> replica?)"): the
same event as READONLY, seen by a connection that was waiting rather than writing, and what it
needs is the same, a reconnect that asks the sentinels again. Its other causes (the stream key
deleted under an XREADGROUP, an operator's ``CLIENT UNBLOCK <id> ERROR``) are one-off too: the
reconnect's first read works or fails with an error of its own, classified on its own, and a
"failover" that keeps coming back is still counted once it lasts longer than a failover
should. (NOGROUP, the group or its stream deleted, is an outage: see redis_common.)
"""

from __future__ import annotations

import functools
import re

from redis import exceptions as redis_errors
from redis.sentinel import MasterNotFoundError

from .redis_urls import parse_redis_url

FAILING_OVER: tuple[type[BaseException], ...] = (
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # also MasterDownError, its subclass
    redis_errors.BusyLoadingError,
    redis_errors.AskError,  # also MovedError, its subclass
    redis_errors.ClusterError,  # redirected too often while the slot map changes
    redis_errors.SlotNotCoveredError,  # no primary for the slot (yet)
    MasterNotFoundError,  # the sentinels know no primary (yet)
)

#: Error codes of replies redis-py leaves as a plain ResponseError (inside a script's error, for
#: one); read only as a last resort.
_FAILING_OVER_CODE = re.compile(r"\b(LOADING|READONLY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|UNBLOCKED)\b")


def failing_over(exc: BaseException, *, replicated: bool) -> bool:
    """``True`` when ``exc`` is part of a failover. On a Sentinel set or a cluster
    (``replicated``) a lost connection is one too: the primary it reached may have died."""
    if isinstance(exc, FAILING_OVER):
        return True
    if replicated and isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        return _FAILING_OVER_CODE.search(str(exc)) is not None
    return False


@functools.lru_cache(maxsize=256)
def is_replicated(url: str) -> bool:
    """A Sentinel or cluster URL."""
    return parse_redis_url(url).topology != "single"
