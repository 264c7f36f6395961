"""A Sentinel set's primary killed under a steady publisher: consumers handle again within 5 s
of the promotion, nothing replicated is lost, the old primary returns as a replica without
tripping anything, and the host exits 0 on SIGTERM."""

from __future__ import annotations

import time

import pytest

from tests.cluster.redis_sets import (
    SENTINEL_URL,
    Run,
    record,
    script,
    sentinel_primary,
    synced,
    wait_promoted,
)
from tests.helpers import wait_until

# The time to wait for the clusters lock counts against a test's timeout: other cluster tests,
# each a minute or so on a loaded machine, may hold it first.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def run(redis_sets, tmp_path):
    script("start")  # every node up, the cluster whole and every replica in sync
    case = Run(SENTINEL_URL)
    yield case
    if case.process is not None and case.process.poll() is None:
        case.process.kill()
        case.process.wait(10)
    case.cleanup()


@pytest.mark.parametrize("streams", [False, True], ids=["lists", "streams"])
def test_sentinel_primary_killed(run, tmp_path, streams):
    run.streams = streams
    run.start_host(tmp_path)
    run.start_publishing()
    run.wait_handling()

    old = sentinel_primary()
    wait_until(lambda: synced(old), 10, "the replica to catch up")
    run.quiesce()
    killed_at = time.time()
    script("kill", str(old))
    run.resume()
    promoted_at = wait_promoted(old, sentinel_primary)
    run.wait_handling()
    resumed_at = run.first_handled_after(promoted_at)
    assert resumed_at is not None

    # The old primary comes back and is made a replica of the new one: READONLY, never a trip.
    script("revive", str(old))
    wait_until(lambda: synced(sentinel_primary()), 30, "the old primary to rejoin as replica")
    run.wait_handling()

    run.stop_publishing()
    run.wait_all_handled()
    handled = run.handled()
    lost = set(run.published) - set(handled)
    assert run.stop_host() == 0
    record(
        f"sentinel primary killed ({'streams' if streams else 'lists'})",
        promotion_s=round(promoted_at - killed_at, 2),
        resume_after_promotion_s=round(resumed_at - promoted_at, 2),
        resume_after_kill_s=round(resumed_at - killed_at, 2),
        published=len(run.published),
        lost=len(lost),
        duplicates=sum(1 for n in handled.values() if n > 1),
    )
    assert not lost
    assert resumed_at - promoted_at < 5.0
    errors = (tmp_path / "host.out").read_text() + (tmp_path / "host.err").read_text()
    assert "tripped" not in errors
    assert "circuit_opened" not in errors
