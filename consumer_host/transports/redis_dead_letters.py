"""Dead letters on Redis: browse, replay and purge a consumer's ``<queue>.dlq``, list or stream.

* Lists (``redis://``): the dead-letter list holds kombu envelopes, ``LPUSH``ed, so the oldest is
  at the right end. Browsing reads it with ``LRANGE`` in chunks from the right, counting from the
  right end, which consumers dead-lettering meanwhile (at the left) do not shift. A replay moves
  each message with one script (``LREM`` from the dead letters and ``LPUSH`` of the copy onto the
  queue, as producers push): both happen or neither.
* Streams (``redis+streams://``): the dead-letter stream is read with ``XRANGE`` in chunks; a
  replay moves each entry with one script (``XADD`` of the copy, ``XDEL`` of the dead letter).

Every walk (browse, replay, purge) stops at what the dead letters held when it began: as many
list entries as ``LLEN`` counted then, the stream up to its last id then. A running consumer
that dead-letters again meanwhile (a replayed message failing once more) would otherwise feed
the walk for as long as it runs (2016 dead letters, "replayed 3947"). The AMQP walk does the
same (kombu_dead_letters).

Nothing but the chunk being looked at is held in memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from consumer_host.errors import BrokerError

from .dead_letters import DeadLetterMoveStopped, Selection, replay_headers
from .redis_common import make_client, translated
from .redis_keys import dead_letter_key
from .redis_streams import plain_url

CHUNK = 500

# KEYS: dead letters, queue; ARGV: the dead letter, its copy. 1 if moved, 0 if already gone.
_MOVE_LIST_ENTRY = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: dead-letter stream, queue stream; ARGV: entry id, then the copy's fields and values.
_MOVE_STREAM_ENTRY = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


class _RedisDeadLetters:
    """What both Redis layouts share: a client that never retries behind our back."""

    def __init__(
        self,
        url: str,
        *,
        queue: str,
        dead_letter: str,
        connect_timeout: float = 5.0,
        socket_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.queue = queue
        self.dead_letter = dead_letter_key(url, queue, dead_letter)
        self._client = make_client(
            plain_url(url), connect_timeout=connect_timeout, socket_timeout=socket_timeout
        )

    def close(self) -> None:
        self._client.close()

    def _translated(self, action: str) -> Any:
        return translated(action, self.url, self.dead_letter)


class RedisListDeadLetters(_RedisDeadLetters):
    """Dead letters in a Redis list, in kombu's JSON envelope."""

    def browse(self) -> Iterator[dict[str, Any]]:
        with self._translated("read from"):
            held = self._held()
        seen = 0
        while seen < held:
            with self._translated("read from"):
                chunk = self._chunk(seen)[: held - seen]
            if not chunk:
                return
            seen += len(chunk)
            for raw in chunk:
                yield _envelope_headers(raw)

    def replay(self, selection: Selection) -> int:
        move = self._client.register_script(_MOVE_LIST_ENTRY)
        return self._walk(
            selection,
            "replay to",
            lambda raw: move(keys=[self.dead_letter, self.queue], args=[raw, self._copy(raw)]),
        )

    def purge(self, selection: Selection) -> int:
        return self._walk(
            selection, "purge", lambda raw: self._client.lrem(self.dead_letter, -1, raw)
        )

    def _walk(self, selection: Selection, action: str, take: Any) -> int:
        """Offer each dead letter, oldest first, to ``take`` (1 if it removed it, else 0)."""
        kept = 0  # dead letters left in place at the right end: where the next chunk starts
        done = 0
        try:
            with self._translated(action):
                # No more than were there at the start: new ones arrive at the left, behind
                # them. (Should someone else remove some meanwhile, as many newer ones may be
                # offered instead: the walk stays bounded.)
                left = self._held()
                while left > 0 and not selection.exhausted(done):
                    chunk = self._chunk(kept)[:left]
                    if not chunk:
                        break
                    for raw in chunk:
                        if selection.exhausted(done):
                            break
                        left -= 1
                        if not selection.matches(_envelope_headers(raw)):
                            kept += 1
                        elif int(take(raw)):
                            done += 1
                        # else: someone else removed it meanwhile; it is neither kept nor ours
        except BrokerError as exc:
            raise DeadLetterMoveStopped(str(exc), done=done) from exc
        return done

    def _held(self) -> int:
        return int(self._client.llen(self.dead_letter))

    def _chunk(self, skip: int) -> list[bytes]:
        """Up to CHUNK dead letters, oldest first, after the ``skip`` oldest."""
        items: list[bytes] = self._client.lrange(self.dead_letter, -(skip + CHUNK), -(skip + 1))  # type: ignore[assignment]
        items.reverse()
        return items

    def _copy(self, raw: bytes) -> bytes:
        """The envelope with the replay headers and a fresh delivery tag; the body untouched."""
        try:
            envelope = json.loads(raw)
        except ValueError:
            return raw  # not an envelope: back as it is, for the consumer to judge
        if not isinstance(envelope, dict):
            return raw
        headers = envelope.get("headers")
        envelope["headers"] = replay_headers(headers if isinstance(headers, dict) else {})
        properties = envelope.get("properties")
        if isinstance(properties, dict):
            properties["delivery_tag"] = str(uuid.uuid4())
            properties["delivery_info"] = {"exchange": "", "routing_key": self.queue}
        return json.dumps(envelope).encode()


class RedisStreamDeadLetters(_RedisDeadLetters):
    """Dead letters in a Redis stream (fields body, content-type, content-encoding, headers,
    message_id)."""

    def browse(self) -> Iterator[dict[str, Any]]:
        for chunk in self._chunks("read from"):
            for _entry_id, fields in chunk:
                yield _entry_headers(fields)

    def replay(self, selection: Selection) -> int:
        move = self._client.register_script(_MOVE_STREAM_ENTRY)
        done = 0
        try:
            for chunk in self._chunks("replay to"):
                for entry_id, fields in chunk:
                    if selection.exhausted(done):
                        return done
                    if not selection.matches(_entry_headers(fields)):
                        continue
                    copy = {
                        **fields,
                        b"headers": json.dumps(
                            replay_headers(_entry_headers(fields)), default=str
                        ).encode(),
                    }
                    flat = [item for pair in copy.items() for item in pair]
                    with self._translated("replay to"):
                        done += int(
                            move(keys=[self.dead_letter, self.queue], args=[entry_id, *flat])
                        )
        except BrokerError as exc:
            raise DeadLetterMoveStopped(str(exc), done=done) from exc
        return done

    def purge(self, selection: Selection) -> int:
        done = 0
        try:
            for chunk in self._chunks("purge"):
                ids: list[bytes] = []
                for entry_id, fields in chunk:
                    if selection.exhausted(done + len(ids)):
                        break
                    if selection.matches(_entry_headers(fields)):
                        ids.append(entry_id)
                if ids:
                    with self._translated("purge"):
                        done += int(self._client.xdel(self.dead_letter, *ids))
                if selection.exhausted(done):
                    break
        except BrokerError as exc:
            raise DeadLetterMoveStopped(str(exc), done=done) from exc
        return done

    def _chunks(self, action: str) -> Iterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        """The dead letters in chunks, oldest first, up to the newest there when this began."""
        with self._translated(action):
            newest: Any = self._client.xrevrange(self.dead_letter, count=1)
        if not newest:
            return
        last = newest[0][0]
        start = "-"
        while True:
            with self._translated(action):
                chunk: Any = self._client.xrange(self.dead_letter, min=start, max=last, count=CHUNK)
            if not chunk:
                return
            yield chunk
            start = "(" + chunk[-1][0].decode()


def _envelope_headers(raw: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(raw)
    except ValueError:
        return {}
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    return headers if isinstance(headers, dict) else {}


def _entry_headers(fields: dict[bytes, bytes]) -> dict[str, Any]:
    try:
        headers = json.loads(fields.get(b"headers") or b"{}")
    except ValueError:
        return {}
    return headers if isinstance(headers, dict) else {}
