"""Which AMQP acks to send when deliveries are settled in any order.

With ``concurrency=K`` handlers finish in any order, but ``basic.ack(multiple=True)`` settles
*every* outstanding tag up to the one named. The ledger keeps the channel's outstanding tags in
delivery order and hands out acks that are always safe:

- one ``multiple`` ack over the contiguous run of finished tags that starts at the oldest
  outstanding one (tags inside the run that were already rejected or requeued are no longer
  outstanding at the broker, so the multiple ack does not touch them);
- a single ack for each finished tag past the first gap (an unfinished tag);
- never an ack for a tag that is unfinished, rejected or already acked (RabbitMQ closes the
  channel with PRECONDITION_FAILED "unknown delivery tag" on a second ack).

Bookkeeping is one deque and two sets, touched once or twice per message: the benchmark's
in-order case pops the head of the deque and sends one multiple ack per flush.
"""

from __future__ import annotations

from collections import deque


class AckLedger:
    """The outstanding delivery tags of one channel and which of them are finished.

    Not thread-safe: the transport holds its I/O lock around every call.
    """

    __slots__ = ("_finished", "_outstanding", "_settled", "first_finished_at")

    def __init__(self) -> None:
        self._outstanding: deque[int] = deque()
        self._finished: set[int] = set()
        # Rejected, requeued or singly acked, but still in _outstanding until they reach its head.
        self._settled: set[int] = set()
        #: When the oldest pending ack was recorded (clock seconds), ``None`` when none is.
        self.first_finished_at: float | None = None

    def __len__(self) -> int:
        """How many finished tags wait for an ack."""
        return len(self._finished)

    def delivered(self, tag: int) -> None:
        """The broker delivered ``tag`` (tags grow on a channel)."""
        self._outstanding.append(tag)

    def finish(self, tag: int, now: float) -> None:
        """The message behind ``tag`` is done; its ack may wait for :meth:`take`."""
        if tag in self._settled:
            return  # settled already: a second ack would close the channel
        if not self._finished:
            self.first_finished_at = now
        self._finished.add(tag)

    def settled(self, tag: int) -> None:
        """``tag`` was settled at the broker some other way (reject, requeue)."""
        self._finished.discard(tag)
        self._settled.add(tag)
        if not self._finished:
            self.first_finished_at = None

    def take(self) -> tuple[int | None, list[int]]:
        """The acks to send now: ``(multiple_up_to, singles)``; both may be empty.

        The caller sends them at once; the ledger counts them as sent.
        """
        finished = self._finished
        if not finished:
            return None, []
        outstanding = self._outstanding
        settled = self._settled
        up_to = None
        while outstanding:
            head = outstanding[0]
            if head in finished:
                finished.remove(head)
                up_to = head
            elif head in settled:
                settled.remove(head)
            else:
                break
            outstanding.popleft()
        singles = sorted(finished)
        settled.update(singles)
        finished.clear()
        self.first_finished_at = None
        return up_to, singles

    def clear(self) -> None:
        """The channel is gone: its tags mean nothing any more."""
        self._outstanding.clear()
        self._finished.clear()
        self._settled.clear()
        self.first_finished_at = None
