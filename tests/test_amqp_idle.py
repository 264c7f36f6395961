"""The AMQP idle wait and its wake socket pair (no broker: a socket pair stands in for AMQP)."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

from consumer_host.transports.amqp_idle import IdleWait


def amqp_like(sock: socket.socket) -> SimpleNamespace:
    return SimpleNamespace(transport=SimpleNamespace(sock=sock, _read_buffer=b""))


def wait_in_thread(idle: IdleWait, connection: SimpleNamespace) -> threading.Thread:
    waiter = threading.Thread(target=idle.wait, args=(connection, 30.0), daemon=True)
    waiter.start()
    return waiter


def test_a_wake_before_the_first_wait_is_kept():
    quiet, _peer = socket.socketpair()
    idle = IdleWait(heartbeat=0)  # waits up to IDLE_WAIT: a lost wake would show
    idle.wake()  # a stop that came before the consumer first went idle
    waiter = wait_in_thread(idle, amqp_like(quiet))
    waiter.join(3)
    assert not waiter.is_alive(), "the early wake was lost"
    idle.close()
    quiet.close()
    _peer.close()


def test_close_releases_the_pair_and_a_later_wake_makes_a_new_one():
    idle = IdleWait(heartbeat=0)
    idle.wake()
    first = idle._pair
    assert first is not None
    idle.close()
    assert idle._pair is None
    assert all(end.fileno() == -1 for end in first)
    idle.wake()
    assert idle._pair is not None
    idle.close()
