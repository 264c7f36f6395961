"""AMQP frames read in bulk (transports/amqp_reads): the same frames as py-amqp's reader, in
the same order, however the bytes are cut by the network; a frame cut short is resumed."""

from __future__ import annotations

import socket
import struct

import pytest
from amqp.exceptions import UnexpectedFrame
from amqp.transport import TCPTransport

from consumer_host.transports import amqp_reads
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.kombu_transport import KombuTransport

from .brokers import unique_queue


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


@pytest.fixture
def wire():
    """A py-amqp TCP transport on one end of a socket pair (non-blocking, as in a
    ``drain_events(timeout=0)``), with the bulk reader installed; the other end to write to."""
    ours, theirs = socket.socketpair()
    transport = TCPTransport("127.0.0.1:5672")
    transport.sock = ours
    transport._setup_transport()
    transport.connected = True
    ours.settimeout(0)
    amqp_reads.install(transport)
    yield transport, theirs
    ours.close()
    theirs.close()


def test_frames_come_whole_and_in_order_however_the_bytes_are_cut(wire):
    transport, theirs = wire
    frames = [(1, 1, b"deliver"), (2, 1, b"h" * 300), (3, 1, b""), (8, 0, b""), (3, 2, b"x" * 9)]
    stream = b"".join(frame(*each) for each in frames)
    got = []
    for at in range(0, len(stream), 5):  # five bytes at a time: every frame is cut somewhere
        theirs.sendall(stream[at : at + 5])
        try:
            while True:
                got.append(transport.read_frame())
        except TimeoutError:
            pass
    assert got == frames
    assert all(type(payload) is bytes for _, _, payload in got)
    assert transport._read_buffer == b"", "nothing unread: amqp_idle may wait on the socket"


def test_a_frame_cut_short_is_kept_and_seen_as_unread(wire):
    transport, theirs = wire
    whole = frame(1, 1, b"payload")
    theirs.sendall(whole[:9])
    with pytest.raises(TimeoutError):
        transport.read_frame()
    assert transport._read_buffer, "amqp_idle must not sleep on a half-read frame"
    theirs.sendall(whole[9:])
    assert transport.read_frame() == (1, 1, b"payload")


def test_many_frames_take_one_receive(wire, monkeypatch):
    transport, theirs = wire
    theirs.sendall(b"".join(frame(3, 1, b"%d" % i) for i in range(50)))
    calls = []
    recv = transport._quick_recv
    monkeypatch.setattr(transport, "_quick_recv", lambda n: calls.append(n) or recv(n))
    got = [transport.read_frame()[2] for _ in range(50)]
    assert got == [b"%d" % i for i in range(50)]
    assert len(calls) == 1


def test_a_bad_frame_end_and_a_closed_connection_raise(wire):
    transport, theirs = wire
    theirs.sendall(frame(1, 1, b"ok", end=0x00))
    with pytest.raises(UnexpectedFrame):
        transport.read_frame()
    theirs.close()
    transport._read_buffer = b""
    transport.read_frame.__self__._pos = 0
    with pytest.raises(OSError, match="closed"):
        transport.read_frame()
    assert transport.connected is False


def test_tls_transports_keep_py_amqps_reader():
    class NotTcp:
        read_frame = "py-amqp's"

    transport = NotTcp()
    amqp_reads.install(transport)
    assert transport.read_frame == "py-amqp's"


def test_bursts_and_bodies_larger_than_a_frame_arrive_intact(amqp_broker):
    queue = unique_queue("amqp")
    amqp_broker.queues.add(queue)
    big = "b" * 400_000  # several body frames (RabbitMQ's frame_max is 128 KiB)
    amqp_broker.publish_many(queue, [*range(300), big, *range(300, 600)])
    transport = KombuTransport(
        amqp_broker.url, QueueSpec(queue=queue, dead_letter=f"{queue}.dlq", prefetch=1000)
    )
    transport.connect()
    try:
        transport.start_consuming()
        got = []
        for _ in range(200):
            batch = transport.fetch(0.2, 1000)
            got += batch
            for delivery in batch:
                transport.ack(delivery)
            if len(got) >= 601:
                break
        expected = [str(i).encode() for i in range(300)]
        expected += [f'"{big}"'.encode(), *(str(i).encode() for i in range(300, 600))]
        assert [d.body for d in got] == expected
    finally:
        transport.close()
    assert amqp_broker.depth(queue) == 0
