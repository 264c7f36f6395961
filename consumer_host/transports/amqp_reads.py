"""Reading AMQP frames in bulk: one ``recv`` for many frames, one socket timeout per burst.

py-amqp's TCP transport reads exactly the bytes it needs next, one ``recv`` each: a frame's
header, its payload and its end octet, so three system calls per frame and nine per message
(deliver, header, body), each followed by slicing and re-joining its read buffer. And every
``drain_events(timeout=0)`` switches the socket's timeout there and back through a generator
context manager, three times per message. Profiled on a no-op consumer, that was a fifth of the
host's CPU per message.

Here a read takes whatever the socket holds (up to 64 KiB) and frames are cut out of that
buffer; a burst of deliveries that already arrived is read under one timeout of 0
(:func:`drain_ready`). The frames, their order and py-amqp's frame state are unchanged.
Unread bytes stay in the transport's ``_read_buffer``, empty when there are none (amqp_idle
looks there before it waits on the socket); a frame cut short by a timeout stays there too and
is resumed by the next read. TLS connections keep py-amqp's reader: the SSL object buffers.
"""

from __future__ import annotations

import errno
from struct import Struct
from typing import Any

from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport

_CHUNK = 65536
_HEADER = Struct(">BHI")  # type, channel, payload size
_FRAME_END = 0xCE
_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_STILL_CONNECTED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOENT})


def install(transport: Any) -> None:
    """Read ``transport``'s frames in bulk (a connected py-amqp TCP transport; others keep
    py-amqp's reader)."""
    if isinstance(transport, TCPTransport):
        transport.read_frame = _BulkFrames(transport).read_frame


def drain_ready(connection: Any, count: int) -> None:
    """Read up to ``count`` more methods that have already arrived on ``connection`` (a
    py-amqp connection); ``TimeoutError`` once nothing more is there, as
    ``drain_events(timeout=0)`` would raise it."""
    transport = connection.transport
    # What py-amqp's blocking_read(None) does, without its no-op context manager per frame.
    read_frame, on_frame = transport.read_frame, connection.on_inbound_frame
    with transport.having_timeout(0):
        for _ in range(count):
            while not on_frame(read_frame()):  # frames until a whole method has come
                pass


class _BulkFrames:
    """The frame reader of one transport: its buffer is ``transport._read_buffer``."""

    __slots__ = ("_pos", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._pos = 0  # how much of _read_buffer has been handed out as frames

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        """One frame, as py-amqp's ``read_frame`` returns it: ``(type, channel, payload)``."""
        buf = self._transport._read_buffer
        pos = self._pos
        if len(buf) - pos < 7:
            buf, pos = self._fill(7)
        frame_type, channel, size = _HEADER.unpack_from(buf, pos)
        end = pos + 7 + size
        if len(buf) <= end:
            buf, pos = self._fill(8 + size)
            end = 7 + size
        if buf[end] != _FRAME_END:
            raise UnexpectedFrame(f"Received frame_end {buf[end]:#04x} while expecting 0xce")
        payload = buf[pos + 7 : end]
        pos = end + 1
        if pos == len(buf):  # all read: an empty buffer says so to amqp_idle
            self._transport._read_buffer = b""
            pos = 0
        self._pos = pos
        return frame_type, channel, payload

    def _fill(self, need: int) -> tuple[bytes, int]:
        """Receive until ``need`` unread bytes are buffered; what came stays on a timeout."""
        transport = self._transport
        buf = transport._read_buffer[self._pos :]
        self._pos = 0
        transport._read_buffer = buf
        recv = transport._quick_recv
        while len(buf) < need:
            try:
                chunk = recv(max(_CHUNK, need - len(buf)))
            except TimeoutError:
                raise
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno in _WOULD_BLOCK:  # a timeout of 0: nothing (more) there yet
                    raise TimeoutError from None
                if exc.errno not in _STILL_CONNECTED:
                    transport.connected = False
                raise
            if not chunk:
                transport.connected = False
                raise OSError("Server unexpectedly closed connection")
            buf += chunk
            transport._read_buffer = buf
        return buf, 0
