"""A Redis Cluster primary killed under a steady publisher (lists and Streams), and a host
SIGKILLed and restarted on a cluster: nothing replicated is lost, consumers handle again within
5 s of the promotion, the host exits 0 on SIGTERM."""

from __future__ import annotations

import time

import pytest

from tests.cluster.redis_sets import (
    CLUSTER_URL,
    Run,
    cluster_primary_of,
    record,
    script,
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
    case = Run(CLUSTER_URL)
    yield case
    if case.process is not None and case.process.poll() is None:
        case.process.kill()
        case.process.wait(10)
    case.cleanup()


def _finish(run, case: str, **figures) -> None:
    run.stop_publishing()
    run.wait_all_handled()
    handled = run.handled()
    lost = set(run.published) - set(handled)
    status = run.stop_host()
    record(
        case,
        **figures,
        published=len(run.published),
        lost=len(lost),
        duplicates=sum(1 for n in handled.values() if n > 1),
    )
    assert not lost
    assert status == 0


@pytest.mark.parametrize("streams", [False, True], ids=["lists", "streams"])
def test_cluster_primary_killed(run, tmp_path, streams):
    run.streams = streams
    run.start_host(tmp_path)
    run.start_publishing()
    run.wait_handling()

    old = cluster_primary_of(run.queue)
    wait_until(lambda: synced(old), 10, "the replica to catch up")
    run.quiesce()
    killed_at = time.time()
    script("kill", str(old))
    run.resume()
    promoted_at = wait_promoted(old, lambda: cluster_primary_of(run.queue))
    run.wait_handling()
    resumed_at = run.first_handled_after(promoted_at)
    assert resumed_at is not None
    # Back as a replica of the promoted node, in sync before the next case kills anything.
    script("revive", str(old))
    wait_until(lambda: synced(cluster_primary_of(run.queue)), 30, "the old primary to rejoin")

    _finish(
        run,
        f"cluster primary killed ({'streams' if streams else 'lists'})",
        promotion_s=round(promoted_at - killed_at, 2),
        resume_after_promotion_s=round(resumed_at - promoted_at, 2),
        resume_after_kill_s=round(resumed_at - killed_at, 2),
    )
    assert resumed_at - promoted_at < 5.0
    errors = (tmp_path / "host.out").read_text() + (tmp_path / "host.err").read_text()
    assert "tripped" not in errors


def test_host_killed_and_restarted_on_a_cluster(run, tmp_path):
    """Streams: what the killed host had read and not acked is claimed by the new one."""
    run.streams = True
    run.start_host(tmp_path)
    run.start_publishing()
    run.wait_handling()
    run.kill_host()
    killed_at = time.time()
    run.start_host(tmp_path)
    run.wait_handling()
    resumed_at = run.first_handled_after(killed_at)
    assert resumed_at is not None
    _finish(
        run,
        "host SIGKILLed and restarted on a cluster (streams)",
        resume_after_kill_s=round(resumed_at - killed_at, 2),
    )
