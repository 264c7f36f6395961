"""Read AMQP frames so that a message whose properties cannot be parsed still arrives.

Where py-amqp fails: it parses a content-header frame (properties, headers table) in
``amqp.method_framing.frame_handler`` with a recursive table reader. A header table nested
1,500 deep raises ``RecursionError`` there (an unknown field type raises ``FrameSyntaxError``),
*after* the basic.deliver frame was taken and *before* the frame state moves on: the body frame
that follows is then refused as ``UnexpectedFrame``, and the next message's header is glued onto
the broken message's delivery tag. Every later fetch fails, or worse, acks the wrong message.

So this module installs the same frame state machine with one change: when the properties do
not parse, the header table is read tolerantly (top-level keys whose values parse are kept; an
offending value is replaced by a string), the other properties are read normally, and the
message carries a defect (:data:`DEFECT_PROPERTY`) that the transport turns into
``Delivery.defect``. The frame stream stays in step; the consumer dead-letters the message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from struct import unpack_from
from typing import Any

from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import _read_item, decode_properties_basic

#: Key under which a message's parse defect travels in its properties (never sent anywhere).
DEFECT_PROPERTY = "x-consumer-host-defect"
_CONTENT_METHODS = frozenset({spec.Basic.Return, spec.Basic.Deliver, spec.Basic.GetOk})
_HEADERS_FLAG = 0x2000
_TYPES_WITH_LENGTH = frozenset("FASx")  # a 4-byte length follows the type: skippable


def install(connection: Any) -> None:
    """Replace py-amqp's frame reader on ``connection`` (an ``amqp.Connection``, connected)."""
    connection.on_inbound_frame = _frame_handler(connection, connection.on_inbound_method)


def _frame_handler(connection: Any, callback: Callable[..., Any]) -> Callable[[Any], bool]:
    """py-amqp 5.4's ``frame_handler``, with a header frame that cannot fail."""
    expected_types: defaultdict[int, int] = defaultdict(lambda: 1)
    partial_messages: dict[int, Message] = {}

    def on_frame(frame: tuple[int, int, Any]) -> bool:
        frame_type, channel, buf = frame
        connection.bytes_recv += 1
        if frame_type not in (expected_types[channel], 8):
            raise UnexpectedFrame(
                f"Received frame {frame_type} while expecting type: {expected_types[channel]}"
            )
        if frame_type == 1:
            method_sig = unpack_from(">HH", buf, 0)
            if method_sig in _CONTENT_METHODS:
                partial_messages[channel] = Message(frame_method=method_sig, frame_args=buf)
                expected_types[channel] = 2
                return False
            callback(channel, method_sig, buf, None)
        elif frame_type == 2:
            msg = partial_messages[channel]
            try:
                msg.inbound_header(buf)
            except Exception as exc:  # noqa: BLE001 - RecursionError, FrameSyntaxError, struct.error...
                _tolerant_header(msg, buf, exc)
            if not msg.ready:
                expected_types[channel] = 3
                return False
            expected_types[channel] = 1
            partial_messages.pop(channel, None)
            callback(channel, msg.frame_method, msg.frame_args, msg)
        elif frame_type == 3:
            msg = partial_messages[channel]
            msg.inbound_body(buf)
            if not msg.ready:
                return False
            expected_types[channel] = 1
            partial_messages.pop(channel, None)
            callback(channel, msg.frame_method, msg.frame_args, msg)
        elif frame_type == 8:
            return False
        return True

    return on_frame


def _tolerant_header(msg: Message, buf: Any, exc: BaseException) -> None:
    """Fill ``msg`` from a header frame whose properties did not parse."""
    _class_id, body_size = unpack_from(">HxxQ", buf, 0)
    msg.body_size = body_size
    msg.ready = not body_size
    defect = f"unparseable_properties: {type(exc).__name__}: {str(exc)[:200]}"
    try:
        properties, headers = _properties_without_headers(bytes(buf))
    except Exception:  # noqa: BLE001 - not even the fixed fields parse
        properties, headers = {}, {}
    properties["application_headers"] = headers
    properties[DEFECT_PROPERTY] = defect
    msg.properties = properties


def _properties_without_headers(buf: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode the basic properties with the header table cut out, then the table, tolerantly."""
    offset = 12
    (flags,) = unpack_from(">H", buf, offset)
    if not flags & _HEADERS_FLAG:
        properties, _ = decode_properties_basic(buf, offset)
        return properties, {}
    table_at = offset + 2
    for flag in (0x8000, 0x4000):  # content_type and content_encoding come first
        if flags & flag:
            table_at += 1 + buf[table_at]
    (table_len,) = unpack_from(">I", buf, table_at)
    table = buf[table_at + 4 : table_at + 4 + table_len]
    cut = buf[:table_at] + b"\x00\x00\x00\x00" + buf[table_at + 4 + table_len :]
    properties, _ = decode_properties_basic(cut, offset)
    return properties, _tolerant_table(table)


def _tolerant_table(table: bytes) -> dict[str, Any]:
    """Top-level keys of an AMQP field table; a value that does not parse becomes a string."""
    headers: dict[str, Any] = {}
    offset = 0
    while offset < len(table):
        key_len = table[offset]
        key = table[offset + 1 : offset + 1 + key_len].decode("utf-8", "replace")
        offset += 1 + key_len
        kind = chr(table[offset])
        try:
            value, offset = _read_item(table, offset)
        except Exception as exc:  # noqa: BLE001 - the offending value
            if kind not in _TYPES_WITH_LENGTH:
                headers[key] = f"unparseable value ({type(exc).__name__}); later keys dropped"
                break
            (length,) = unpack_from(">I", table, offset + 1)
            offset += 5 + length
            value = f"unparseable {kind!r} value of {length} bytes ({type(exc).__name__})"
        headers[key] = value
    return headers
