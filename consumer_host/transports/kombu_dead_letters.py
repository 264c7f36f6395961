"""Dead letters on RabbitMQ: browse, replay and purge a consumer's ``<queue>.dlq``.

AMQP has no "peek", so browsing takes each dead letter with ``basic.get`` without acking it and
then closes the channel: RabbitMQ puts unacked messages back at their original positions, so a
listing leaves the queue exactly as it was (tests/test_dlq.py checks the order). Replay and purge
walk the same way and ack only what they took; the rest goes back, in order, when the channel
closes. A replayed copy is published on a second channel with publisher confirms and
``mandatory``: only once the broker confirmed it and did not return it as unroutable is the dead
letter acked, so a crash in between duplicates a message, never loses one.

The walk stops after as many messages as the queue held when it began, so dead letters arriving
meanwhile (or a copy a replay just made, should the queues be one) are not walked twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import amqp
import amqp.exceptions
from kombu.connection import Connection

from consumer_host.errors import BrokerError
from consumer_host.redaction import redact_text

from .amqp_nodes import NodeRotation
from .base import Place
from .dead_letters import DeadLetterMoveStopped, Selection, replay_headers
from .kombu_connection import classify, open_node, translate

#: The most dead letters ``browse`` has pushed at once (a ``basic.qos`` prefetch is 16 bits).
BROWSE_MAX = 65_535
#: Seconds ``browse`` waits for more before taking what came as all there is.
BROWSE_IDLE = 2.0

#: Properties a replayed copy does not take over: the headers are rewritten, and an expiration
#: would let the broker drop the copy before the consumer sees it.
_NOT_COPIED = frozenset({"application_headers", "expiration"})


class KombuDeadLetters:
    """One consumer's dead-letter queue on RabbitMQ (a short-lived connection per command)."""

    def __init__(
        self, url: str, *, queue: str, dead_letter: str, connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.queue = queue
        self.dead_letter = dead_letter
        self._connect_timeout = connect_timeout
        # A cluster's failover URL: the first node that answers (amqp_nodes).
        self._nodes = NodeRotation(url)
        self._conn: Connection | None = None

    def browse(self) -> Iterator[dict[str, Any]]:
        with self._translated("read from"):
            channel = self._channel()
            try:
                for message in self._pushed(channel):
                    yield _headers_of(message)
            finally:
                _close(channel)  # every message goes back where it was

    def replay(self, selection: Selection) -> int:
        return self._move(selection, "replay to", self._publish_copy)

    def purge(self, selection: Selection) -> int:
        return self._move(selection, "purge", None)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # a failing close still leaves us disconnected
                conn.release()  # type: ignore[no-untyped-call]

    # -- walking ---------------------------------------------------------------------------------

    def _move(
        self,
        selection: Selection,
        action: str,
        copy: Callable[[Any, amqp.Message], None] | None,
    ) -> int:
        """Take each matching dead letter, copy it with ``copy`` (confirmed) if given, ack it."""
        done = 0
        try:
            with self._translated(action):
                channel = self._channel()
                publisher = self._channel() if copy is not None else None
                try:
                    for message in self._walk(channel):
                        if selection.exhausted(done):
                            break
                        if not selection.matches(_headers_of(message)):
                            continue
                        if copy is not None:
                            copy(publisher, message)
                        channel.basic_ack(message.delivery_tag)
                        done += 1
                finally:
                    # A closing channel is ordered after its acks, and gives back the rest.
                    _close(channel)
                    if publisher is not None:
                        _close(publisher)
        except BrokerError as exc:
            raise DeadLetterMoveStopped(str(exc), done=done) from exc
        return done

    def _walk(self, channel: Any) -> Iterator[amqp.Message]:
        for _ in range(self._depth()):
            message = channel.basic_get(self.dead_letter, no_ack=False)
            if message is None:
                return
            yield message

    def _pushed(self, channel: Any) -> Iterator[amqp.Message]:
        """Every ready dead letter, unacked, pushed by the broker: one round trip per message
        (``basic.get``) made 10,000 take 2-4 s. Browsing changes nothing, so nothing is acked:
        the prefetch must cover them all (AMQP's limit is 65,535; past it, one at a time)."""
        depth = self._depth()
        if depth > BROWSE_MAX:
            yield from self._walk(channel)
            return
        if depth == 0:
            return
        arrived: deque[amqp.Message] = deque()
        channel.basic_qos(0, depth, False)
        channel.basic_consume(self.dead_letter, no_ack=False, callback=arrived.append)
        seen = 0
        while seen < depth:
            if not arrived:
                try:
                    channel.connection.drain_events(timeout=BROWSE_IDLE)
                except TimeoutError:
                    return  # fewer than counted (another reader took some): what came is all
            while arrived and seen < depth:
                seen += 1
                yield arrived.popleft()

    def _depth(self) -> int:
        """Messages ready in the dead-letter queue; 0 when it does not exist (nothing failed)."""
        channel = self._connection().channel()  # type: ignore[no-untyped-call]
        try:
            _, count, _ = channel.queue_declare(queue=self.dead_letter, passive=True)
        except amqp.exceptions.NotFound:
            return 0  # the broker closed this channel; the connection is fine
        _close(channel)
        return int(count)

    def _publish_copy(self, publisher: Any, message: amqp.Message) -> None:
        properties = {k: v for k, v in message.properties.items() if k not in _NOT_COPIED}
        properties["delivery_mode"] = 2
        copy = amqp.Message(
            message.body, application_headers=replay_headers(_headers_of(message)), **properties
        )
        try:
            # The channel confirms (``confirm_publish``): this returns once the broker acked the
            # copy, and raises if it nacked it or returned it as unroutable.
            publisher.basic_publish(copy, exchange="", routing_key=self.queue, mandatory=True)
        except (amqp.exceptions.ChannelError, amqp.exceptions.MessageNacked) as exc:
            reason = redact_text(str(exc)) or type(exc).__name__
            where = Place("publish to", self._node, self.queue)
            raise DeadLetterMoveStopped(
                f"cannot replay to {where}: the broker did "
                f"not take the copy ({type(exc).__name__}: {reason}); does the queue exist?",
                done=0,
            ) from exc

    # -- connection and errors -------------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None:
            # No heartbeats: the commands are short and never leave the connection idle.
            self._conn = self._nodes.connect(
                lambda node: open_node(
                    node, self.dead_letter, connect_timeout=self._connect_timeout
                )
            )
        return self._conn

    @property
    def _node(self) -> str:
        """The node connected to (errors name it), else the URL as given."""
        return self._nodes.node or self.url

    def _channel(self) -> Any:
        channel = self._connection().channel()  # type: ignore[no-untyped-call]
        # Bodies stay the exact bytes that were sent; a copy must not be re-encoded.
        channel.auto_decode = False
        return channel

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Map kombu, amqp and socket errors to ours, without secrets (this library's seam)."""
        try:
            yield
        except Exception as exc:
            where = Place(action, self._node, self.dead_letter)
            error = translate(exc, where, self._conn)
            if error is None and isinstance(exc, amqp.exceptions.AMQPError):
                error = classify(exc, where)
            if error is None:
                raise
            raise error from exc


def _headers_of(message: amqp.Message) -> dict[str, Any]:
    headers = message.properties.get("application_headers")
    return headers if isinstance(headers, dict) else {}


def _close(channel: Any) -> None:
    with suppress(Exception):  # a broken channel is closed with its connection
        channel.close()
