"""Turn a delivery's bytes into a body, or say precisely why not.

Bodies are decoded here rather than by kombu so that nothing but the content types a consumer
``accept``s is ever deserialized (pickle only when listed), whatever else the process has done to
kombu's global serializer registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kombu.serialization import loads as kombu_loads

from consumer_host.errors import ConfigError
from consumer_host.message import Delivery

JSON = "application/json"
RAW_TYPES = frozenset({"application/octet-stream", "application/data"})

#: Short names users write in ``accept=`` and the content types they stand for.
ACCEPT_ALIASES = {
    "json": JSON,
    "pickle": "application/x-python-serialize",
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
    "bytes": "application/octet-stream",
}


class BadMessage(Exception):
    """The delivery cannot be handed to a handler; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def content_types(accept: Iterable[str]) -> frozenset[str]:
    """``("json", "bytes")`` -> the content types they allow. Unknown names are an error."""
    if isinstance(accept, str):
        raise ConfigError(f"accept must be a list of content types, got the string {accept!r}")
    types = set()
    for name in accept:
        resolved = ACCEPT_ALIASES.get(name, name)
        if "/" not in resolved:
            known = ", ".join(ACCEPT_ALIASES)
            raise ConfigError(f"accept: unknown content type {name!r} (use one of {known})")
        types.add(resolved)
    if not types:
        raise ConfigError("accept must name at least one content type")
    return frozenset(types)


def decode(delivery: Delivery, accepted: frozenset[str], max_body_bytes: int) -> Any:
    """Return the decoded body, or raise :class:`BadMessage`."""
    body = delivery.body
    if len(body) > max_body_bytes:
        raise BadMessage("too_large", f"body of {len(body)} bytes exceeds {max_body_bytes}")
    content_type = delivery.content_type
    if not content_type:
        raise BadMessage("missing_content_type", "the message has no content type")
    if isinstance(content_type, str):
        content_type = _media_type(content_type)
    if not isinstance(content_type, str) or content_type not in accepted:
        raise BadMessage(
            "content_type_not_accepted",
            f"content type {content_type!r} is not accepted "
            f"(accept: {', '.join(sorted(accepted))})",
        )
    if content_type == JSON:
        return _decode_json(body, delivery.content_encoding)
    if content_type in RAW_TYPES:
        return body
    try:
        return kombu_loads(  # type: ignore[no-untyped-call]
            body, content_type, delivery.content_encoding or "binary", accept=[content_type]
        )
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the message's fault
        raise BadMessage("decode_error", f"{type(exc).__name__}: {exc}") from None


def _media_type(content_type: str) -> str:
    """``"application/json; charset=utf-8"`` is JSON too. Remembered for the few content types
    a queue carries (at most :data:`_MEDIA_TYPES_KEPT`, so a hostile producer cannot grow it):
    this runs for every message."""
    known = _MEDIA_TYPES.get(content_type)
    if known is None:
        known = content_type.split(";", 1)[0].strip().lower()
        if len(_MEDIA_TYPES) < _MEDIA_TYPES_KEPT:
            _MEDIA_TYPES[content_type] = known
    return known


_MEDIA_TYPES: dict[str, str] = {}
_MEDIA_TYPES_KEPT = 64


#: Content encodings that mean UTF-8 for a JSON body (kombu writes "utf-8"; "binary": as sent).
_UTF8 = frozenset({"utf-8", "utf8", "UTF-8", "UTF8", "binary"})


def _decode_json(body: bytes, encoding: str | None = None) -> Any:
    if encoding is None or encoding in _UTF8:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadMessage("invalid_utf8", str(exc)) from None
    else:
        text = _decode_text(body, encoding)
    if not text or text.isspace():  # isspace: no stripped copy of every body
        raise BadMessage("invalid_json", "the body is empty")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadMessage("invalid_json", str(exc)[:200]) from None


def _decode_text(body: bytes, encoding: str) -> str:
    """A JSON body in another text encoding (``latin-1``, ``utf-16``): decoded as it says. A
    name Python does not know, or a bytes codec (``gzip``, ``base64``), is the producer's
    mistake: the body would be read as something it is not."""
    try:
        return body.decode(encoding)
    except LookupError:
        raise BadMessage(
            "unknown_content_encoding", f"{encoding[:100]!r} is not a text encoding"
        ) from None
    except UnicodeError as exc:
        raise BadMessage("invalid_encoding", f"not {encoding[:100]}: {str(exc)[:200]}") from None


def preview(body: bytes, limit: int = 200) -> str:
    """At most ``limit`` bytes of a body, printable, for one log line."""
    head = body[:limit].decode("utf-8", errors="backslashreplace")
    return head + ("…" if len(body) > limit else "")
