"""Long idle waits on an AMQP connection that a stop or a pause can still cut short.

An idle consumer used to wait in ``drain_events(timeout=poll_interval)``: half a second, so that
it noticed a stop soon; a few hundred idle consumers woke hundreds of times a second for
nothing. Here an idle fetch first waits (``poll``) for its socket to become readable or for a
byte on a wake socket that :meth:`IdleWait.wake` writes from any thread, for up to
:data:`~consumer_host.transports.base.IDLE_WAIT` (and a quarter of the heartbeat, so a
dead link is still noticed about as soon as before). A wake written before the wait starts
stays in the socket, so none is lost.
"""

from __future__ import annotations

import select
import socket
import threading
from contextlib import suppress
from typing import Any

from .base import IDLE_WAIT

#: How long a read may block once the socket is readable (see :meth:`IdleWait.wait`).
_DRAIN = 0.05
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class IdleWait:
    """One wake socket pair per transport, made when first needed (by a wait or a wake)."""

    def __init__(self, heartbeat: float) -> None:
        self.longest = min(IDLE_WAIT, heartbeat / 4) if heartbeat else IDLE_WAIT
        self._lock = threading.Lock()
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def wake(self) -> None:
        """End the current (or the next) idle wait; from any thread."""
        with self._lock:
            _, sender = self._opened()
            with suppress(OSError):  # full (a wake is pending anyway) or closed
                sender.send(b"\0")

    def close(self) -> None:
        """Close the pair (the transport closed); the next wait or wake makes a new one."""
        with self._lock:
            pair, self._pair = self._pair, None
        for end in pair or ():
            end.close()

    def wait(self, connection: Any, timeout: float) -> float | None:
        """Wait until the AMQP socket has something to read, a wake or the timeout: ``None``
        when there is nothing to read, else how long ``drain_events`` may then block. That is
        short: it reads until a *method* frame comes, so after a heartbeat frame it would
        block, unwakeable, for the whole timeout (a frame cut by it is kept and resumed).
        The whole ``timeout`` when this is not a py-amqp connection with a socket."""
        transport = getattr(connection, "transport", None)
        sock = getattr(transport, "sock", None)
        if timeout <= 0 or sock is None:
            return timeout
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the socket holds
        if getattr(transport, "_read_buffer", None) or (pending is not None and pending()):
            return min(timeout, _DRAIN)
        receiver = self._receiver()
        poller = select.poll()
        poller.register(sock.fileno(), _READABLE)
        poller.register(receiver.fileno(), select.POLLIN)
        events = dict(poller.poll(min(timeout, self.longest) * 1000))
        if receiver.fileno() in events:
            with suppress(OSError):
                receiver.recv(4096)
            return None
        return min(timeout, _DRAIN) if events else None

    def _receiver(self) -> socket.socket:
        with self._lock:
            return self._opened()[0]

    def _opened(self) -> tuple[socket.socket, socket.socket]:
        """The pair, made now if needed (caller holds the lock)."""
        if self._pair is None:
            receiver, sender = socket.socketpair()
            receiver.setblocking(False)
            sender.setblocking(False)
            self._pair = (receiver, sender)
        return self._pair
