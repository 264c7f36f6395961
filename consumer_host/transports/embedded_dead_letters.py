"""Dead letters on the embedded development broker (kombu's ``filesystem://``): browse, replay
and purge a consumer's ``<queue>.dlq`` there, so the quickstart's dead letters can be seen.

kombu keeps each message as one JSON file, ``<ms>_<uuid>.<queue>.msg`` in the broker folder's
``queue/``, and serves a queue in file name order. kombu has no "peek" on it (a ``basic_get``
moves the file out, and a give-back writes a new one at the end of the queue), so the files are
read here directly, under the same ``flock`` kombu writes them under: browsing changes nothing.
A replayed copy goes through the broker's own producer (kombu, as ``publish`` does) before its
dead letter's file is removed: a crash in between duplicates a message, never loses one.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumer_host.errors import BrokerError

from .base import Place
from .broker import embedded_broker_folder
from .dead_letters import DeadLetterMoveStopped, Selection, replay_headers

_Entry = tuple[Path, dict[str, Any]]


class EmbeddedDeadLetters:
    """One consumer's dead-letter queue in the embedded broker's folder."""

    def __init__(self, url: str, *, queue: str, dead_letter: str) -> None:
        self.url = url
        self.queue = queue
        self.dead_letter = dead_letter
        self._folder = Path(embedded_broker_folder(url)) / "queue"
        self._producer: Any = None

    def browse(self) -> Iterator[dict[str, Any]]:
        for _path, envelope in self._entries():
            yield _headers_of(envelope)

    def replay(self, selection: Selection) -> int:
        return self._move(selection, replay=True)

    def purge(self, selection: Selection) -> int:
        return self._move(selection, replay=False)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    def _move(self, selection: Selection, *, replay: bool) -> int:
        done = 0
        for path, envelope in self._entries():
            if selection.exhausted(done):
                break
            if not selection.matches(_headers_of(envelope)):
                continue
            try:
                if replay:
                    self._publish_copy(envelope)
                path.unlink()
            except FileNotFoundError:
                continue  # taken by another command meanwhile
            except (BrokerError, OSError) as exc:
                action = "replay to" if replay else "purge"
                raise DeadLetterMoveStopped(
                    f"cannot {Place(action, self.url, self.dead_letter)}: {exc}", done=done
                ) from exc
            done += 1
        return done

    def _publish_copy(self, envelope: dict[str, Any]) -> None:
        from .choose import producer_for  # the broker's own producer, as `publish` uses

        if self._producer is None:
            self._producer = producer_for(self.url)
        properties = envelope.get("properties") or {}
        body = envelope.get("body") or ""
        raw = base64.b64decode(body) if properties.get("body_encoding") == "base64" else body
        self._producer.publish(
            self.queue,
            raw if isinstance(raw, bytes) else str(raw).encode(),
            content_type=envelope.get("content-type") or "application/octet-stream",
            content_encoding=envelope.get("content-encoding") or "binary",
            headers=replay_headers(_headers_of(envelope)),
            message_id=str(properties.get("message_id") or uuid.uuid4()),
        )

    def _entries(self) -> Iterator[_Entry]:
        """The dead letters' files and envelopes, oldest first (kombu's order)."""
        suffix = f"{self.dead_letter}.msg"
        try:
            names = sorted(os.listdir(self._folder))
        except FileNotFoundError:
            return  # nothing was ever sent through this broker
        for name in names:
            if name.partition(".")[2] != suffix:
                continue
            path = self._folder / name
            envelope = _read(path)
            if envelope is not None:
                yield path, envelope


def _read(path: Path) -> dict[str, Any] | None:
    """A message file's envelope, read under kombu's lock; ``None`` if it went or is not one."""
    try:
        with path.open("rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_SH)
            try:
                data = file.read()
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return None
    try:
        envelope = json.loads(data)
    except ValueError:
        return None
    return envelope if isinstance(envelope, dict) else None


def _headers_of(envelope: dict[str, Any]) -> dict[str, Any]:
    headers = envelope.get("headers")
    return headers if isinstance(headers, dict) else {}
