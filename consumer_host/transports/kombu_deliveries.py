"""What arrives from kombu and py-amqp, turned into :class:`~consumer_host.message.Delivery`.

``Delivery.delivery_count`` comes from a quorum queue's ``x-delivery-count`` header (+1), which
RabbitMQ sets from the second delivery on; classic queues keep no count, so it stays ``None``
there (and on a quorum queue's first delivery). The header is read only on a delivery flagged
redelivered: on a first delivery it can only be the producer's (a classic queue passes it
through), and a forged count must not dead-letter a message no handler has seen.
"""

from __future__ import annotations

from typing import Any

from kombu.compression import decompress

from consumer_host.message import Delivery

from . import amqp_frames


def from_amqp(msg: Any) -> Delivery:
    """A py-amqp message, straight off the frame reader (which marks unparseable ones)."""
    props = msg.properties
    info = msg.delivery_info
    headers = props.get("application_headers")
    if not isinstance(headers, dict):
        headers = {}
    defect = props.pop(amqp_frames.DEFECT_PROPERTY, None)
    body = msg.body
    if "compression" in headers and defect is None:
        # kombu producers compress on request; kombu consumers decompress transparently.
        try:
            body = decompress(body, headers["compression"])
            headers = {k: v for k, v in headers.items() if k != "compression"}
        except Exception as exc:  # noqa: BLE001 - an unknown or lying compression header
            defect = f"undecompressable: {type(exc).__name__}: {str(exc)[:200]}"
    redelivered = bool(info.get("redelivered"))
    count = headers.get("x-delivery-count") if redelivered else None
    return Delivery(
        body=body if type(body) is bytes else as_bytes(body, None),  # b'' comes as ''
        content_type=props.get("content_type") or None,
        content_encoding=props.get("content_encoding") or None,
        headers=headers,
        properties=props,
        delivery_info=info,
        redelivered=redelivered,
        delivery_count=count + 1 if type(count) is int else None,
        defect=defect,
        handle=info["delivery_tag"],
    )


def from_kombu(message: Any) -> Delivery:
    """A kombu message from a virtual transport (memory, filesystem)."""
    return Delivery(
        body=as_bytes(message.body, message.content_encoding),
        content_type=message.content_type or None,
        content_encoding=message.content_encoding or None,
        headers=message.headers if isinstance(message.headers, dict) else {},
        properties=message.properties,
        delivery_info=message.delivery_info,
        redelivered=bool(message.delivery_info.get("redelivered")),
        handle=message.delivery_tag,
    )


def as_bytes(body: Any, encoding: str | None) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    # kombu's virtual transports hand over text for text content encodings: undo that.
    try:
        return str(body).encode(encoding or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return str(body).encode("utf-8", errors="surrogateescape")
