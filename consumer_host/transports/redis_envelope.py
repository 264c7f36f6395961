"""kombu's JSON envelope on Redis lists: reading what producers send, writing what they would.

kombu and Celery producers ``LPUSH`` one JSON object per message: the body (base64 when
``properties.body_encoding`` says so), ``content-type``, ``content-encoding``, ``headers`` and
``properties``. Whatever a producer sends is data: an entry this module cannot read comes out as
a :class:`Delivery` with a ``defect`` and the raw bytes as its body, never as an exception.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import uuid
from typing import Any

from consumer_host.message import COPIED_PROPERTIES, Delivery

from .redis_common import dump_headers
from .redis_scripts import DELIVERY_COUNT_FIELD


class _Defect(Exception):
    """An entry that is not a kombu envelope we can read; the message is ``reason: detail``."""


def read_envelope(raw: bytes) -> Delivery:
    """The delivery in one list entry; ``handle`` is the entry itself (what ``LREM`` needs)."""
    try:
        return _read(raw)
    except _Defect as defect:
        reason = str(defect)
    except RecursionError:
        reason = "not a kombu envelope: JSON nested too deeply"
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = f"not a kombu envelope: {type(exc).__name__}: {exc}"[:300]
    return Delivery(
        body=raw,
        content_type=None,
        content_encoding=None,
        headers={},
        properties={},
        delivery_info={},
        delivery_count=_count_prefix(raw) + 1,
        defect=reason,
        handle=raw,
    )


def _read(raw: bytes) -> Delivery:
    envelope = json.loads(raw)
    if not isinstance(envelope, dict):
        raise _Defect(f"not a kombu envelope: a JSON {type(envelope).__name__}, not an object")
    properties = envelope.get("properties") or {}
    headers = envelope.get("headers") or {}
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise _Defect("not a kombu envelope: properties and headers must be objects")
    if "body" not in envelope:
        raise _Defect("not a kombu envelope: no body")
    content_type = _optional_text(envelope, "content-type")
    content_encoding = _optional_text(envelope, "content-encoding")
    body = _body(envelope["body"], properties.get("body_encoding"), content_encoding)
    count = envelope.get(DELIVERY_COUNT_FIELD, 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        count = 0
    info = properties.get("delivery_info")
    return Delivery(
        body=body,
        content_type=content_type,
        content_encoding=content_encoding,
        headers=headers,
        properties=properties,
        delivery_info=info if isinstance(info, dict) else {},
        redelivered=count > 0,
        delivery_count=count + 1,
        handle=raw,
    )


def _optional_text(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    if value is not None and not isinstance(value, str):
        raise _Defect(f"not a kombu envelope: {key} is a {type(value).__name__}")
    return value or None


def _body(body: Any, body_encoding: Any, content_encoding: str | None) -> bytes:
    if not isinstance(body, str):
        raise _Defect(f"not a kombu envelope: body is a {type(body).__name__}, not a string")
    # kombu writes a text body in its content encoding; "binary" means the bytes as they were.
    encoding = content_encoding or "utf-8"
    if encoding == "binary":
        encoding = "latin-1"
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise _Defect(f"unknown content-encoding: {encoding[:100]}") from exc
    if body_encoding == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Defect(f"bad base64 body: {exc}") from exc
    if body_encoding is not None:
        raise _Defect(f"unknown body encoding: {str(body_encoding)[:100]}")
    try:
        return body.encode(encoding)
    except (UnicodeError, LookupError) as exc:  # LookupError: a bytes codec such as "base64"
        raise _Defect(f"body does not fit its content-encoding: {exc}"[:300]) from exc


def _count_prefix(raw: bytes) -> int:
    """The delivery count recovery put in front of an entry that is otherwise unreadable."""
    prefix = b'{"' + DELIVERY_COUNT_FIELD.encode() + b'":'
    if not raw.startswith(prefix):
        return 0
    digits = raw[len(prefix) :].split(b",", 1)[0]
    return int(digits) if digits.isdigit() and len(digits) < 10 else 0


def write_envelope(
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, Any],
    properties: dict[str, Any],
    routing_key: str,
) -> str:
    """One list entry, key for key as kombu's Redis channel writes it (``LPUSH`` it)."""
    props = {k: v for k, v in properties.items() if v is not None}
    props.update(
        delivery_mode=2,
        delivery_info={"exchange": "", "routing_key": routing_key},
        priority=props.get("priority", 0),
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
    )
    return (
        '{"body": '
        + json.dumps(base64.b64encode(body).decode("ascii"))
        + ', "content-encoding": '
        + json.dumps(content_encoding or "binary")
        + ', "content-type": '
        + json.dumps(content_type or "application/data")
        + ', "headers": '
        + dump_headers(headers)
        + ', "properties": '
        + json.dumps(props, default=str)
        + "}"
    )


def copy_envelope(delivery: Delivery, headers: dict[str, Any], routing_key: str) -> str:
    """A retry or dead-letter copy of ``delivery``, with new ``headers``."""
    kept = {k: delivery.properties.get(k) for k in COPIED_PROPERTIES}
    return write_envelope(
        delivery.body,
        content_type=delivery.content_type,
        content_encoding=delivery.content_encoding,
        headers=headers,
        properties={k: v for k, v in kept.items() if _plain(v)},
        routing_key=routing_key,
    )


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)
