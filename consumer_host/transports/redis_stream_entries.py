"""Stream entries as producers write them, and as consumers read them whatever they hold.

Entry fields: ``body``, ``content-type``, ``content-encoding``, ``headers`` (a JSON object) and
``message_id``. Anything a producer sends is data: an entry that does not fit (no body, headers
that are not a JSON object or nest absurdly deep, text fields that are not UTF-8) comes out as a
:class:`Delivery` with a ``defect`` and the raw bytes as its body, never as an exception.
"""

from __future__ import annotations

import json
from typing import Any

from consumer_host.message import Delivery

from .redis_common import dump_headers


def plain_url(url: str) -> str:
    """``redis+streams://h:6379/0`` -> ``redis://h:6379/0`` (and ``rediss+streams`` -> TLS)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.replace('+streams', '')}{sep}{rest}"


def entry_fields(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, Any],
    message_id: str | None,
) -> dict[Any, Any]:
    """The fields of one stream entry, as producers (and ``consumer-host publish``) write them."""
    fields: dict[Any, Any] = {
        "body": body,
        "content-type": content_type or "",
        "content-encoding": content_encoding or "",
        "headers": dump_headers(headers),
    }
    if message_id:
        fields["message_id"] = message_id
    return fields


_NO_HEADERS = b"{}"


class _Defect(Exception):
    """An entry this module cannot read; the message is ``reason: detail``."""


def read_entry(
    entry_id: bytes, fields: dict[bytes, bytes], *, stream: str, group: str, delivered: int
) -> Delivery:
    """The delivery in one entry; ``handle`` is its id (what ``XACK`` needs)."""
    info = {"stream": stream, "group": group, "entry_id": entry_id.decode()}
    try:
        content_type = _text(fields, b"content-type")
        content_encoding = _text(fields, b"content-encoding")
        message_id = _text(fields, b"message_id")
        headers = _headers(fields.get(b"headers"))
        if b"body" not in fields:
            raise _Defect("missing_body: the entry has no body field")
    except _Defect as defect:
        return Delivery(
            body=fields.get(b"body", _raw(fields)),
            content_type=None,
            content_encoding=None,
            headers={},
            properties={},
            delivery_info=info,
            redelivered=delivered > 1,
            delivery_count=delivered,
            defect=str(defect),
            handle=entry_id,
        )
    return Delivery(
        body=fields[b"body"],
        content_type=content_type,
        content_encoding=content_encoding,
        headers=headers,
        properties={"message_id": message_id} if message_id else {},
        delivery_info=info,
        redelivered=delivered > 1,
        delivery_count=delivered,
        handle=entry_id,
    )


def _text(fields: dict[bytes, bytes], name: bytes) -> str | None:
    value = fields.get(name)
    if not value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Defect(f"invalid_utf8: field {name.decode()} at byte {exc.start}") from exc


def _headers(raw: bytes | None) -> dict[str, Any]:
    if not raw or raw == _NO_HEADERS:  # what producers write for none: no JSON to parse
        return {}
    try:
        headers = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Defect(f"invalid_utf8: field headers at byte {exc.start}") from exc
    except RecursionError as exc:
        raise _Defect("bad_headers: JSON nested too deeply") from exc
    except ValueError as exc:
        raise _Defect(f"bad_headers: not JSON: {exc}"[:300]) from exc
    if not isinstance(headers, dict):
        raise _Defect(f"bad_headers: a JSON {type(headers).__name__}, not an object")
    return headers


def _raw(fields: dict[bytes, bytes]) -> bytes:
    """An entry without a body, kept whole for the dead-letter queue: ``name=value`` lines."""
    return b"\n".join(name + b"=" + value for name, value in fields.items())
