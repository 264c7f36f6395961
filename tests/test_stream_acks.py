"""Stream acks survive a dropped connection: finished entries are acked on the next one."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from consumer_host.clock import SYSTEM_CLOCK
from consumer_host.testing import FakeClock
from consumer_host.transports.redis_stream_acks import StreamAcks

from .helpers import wait_until


class FlakyClient:
    """XACK fails while ``down``; records what went through."""

    def __init__(self) -> None:
        self.down = True
        self.acked: list[bytes] = []

    def xack(self, stream: str, group: str, *ids: bytes) -> int:
        if self.down:
            raise redis_errors.ConnectionError("Connection closed by server.")
        self.acked.extend(ids)
        return len(ids)


def test_acks_whose_xack_failed_are_sent_on_the_next_connection():
    acks = StreamAcks("orders", "orders", FakeClock())
    acks.add(b"1-0")
    acks.add(b"2-0")
    dropped = FlakyClient()
    with pytest.raises(redis_errors.ConnectionError):
        acks.flush(dropped)  # type: ignore[arg-type]
    acks.add(b"3-0")
    fresh = FlakyClient()
    fresh.down = False
    acks.flush(fresh)  # type: ignore[arg-type]
    assert fresh.acked == [b"1-0", b"2-0", b"3-0"]


def test_the_next_connections_flusher_sends_the_kept_acks_by_itself():
    """No read follows (a long handler holds the owner): the new flusher must not sleep on them."""
    acks = StreamAcks("orders", "orders", SYSTEM_CLOCK, max_delay=0.01)
    acks.add(b"1-0")
    with pytest.raises(redis_errors.ConnectionError):
        acks.flush(FlakyClient())  # type: ignore[arg-type]
    acks.stop_flusher()  # the link is dropped
    fresh = FlakyClient()
    fresh.down = False
    acks.start_flusher(fresh, "acks:test")  # type: ignore[arg-type]
    try:
        wait_until(lambda: fresh.acked == [b"1-0"], 5, "the kept ack sent by the flusher")
    finally:
        acks.stop_flusher()
