"""kombu connection options, and the one place where kombu, py-amqp and socket errors become ours.

Both the consuming transport and :class:`~consumer_host.transports.kombu_producer.KombuProducer`
classify through :func:`classify`, so a wrong password reads the same wherever it is met, and no
message carries a secret.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import amqp.exceptions
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from consumer_host.errors import BrokerError, BrokerRefused, BrokerUnavailable
from consumer_host.redaction import redact_text

from .base import Place, connection_name
from .broker import embedded_broker_folder, scheme_of

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
#: Errors that retrying cannot cure: credentials, permissions, a bad name, a bad certificate.
PERMANENT = (
    amqp.exceptions.AccessRefused,
    amqp.exceptions.NotAllowed,
    amqp.exceptions.PreconditionFailed,
    amqp.exceptions.NotFound,
    ssl.SSLCertVerificationError,
)


def connection_options(
    url: str, *, heartbeat: float, connect_timeout: float, instance: str = "client"
) -> dict[str, Any]:
    """kombu ``Connection`` keyword arguments for ``url``, TLS verified by default; on AMQP the
    connection is named for ``instance`` (see :func:`~.base.connection_name`)."""
    scheme = scheme_of(url)
    options: dict[str, Any] = {"connect_timeout": connect_timeout}
    if scheme in AMQP_SCHEMES:
        options["heartbeat"] = heartbeat
        options["transport_options"] = {
            "confirm_publish": True,
            "client_properties": {"connection_name": connection_name(instance)},
        }
        if scheme == "amqps":
            # py-amqp's plain ``cert_reqs`` path builds a context with no CA certificates and no
            # hostname check; ask it for ssl.create_default_context() with both instead.
            options["ssl"] = {
                "context": {"check_hostname": True},
                "server_hostname": urlsplit(url).hostname,
            }
    elif scheme == "filesystem":
        folder = embedded_broker_folder(url)
        for sub in ("queue", "control", "processed"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        options["transport_options"] = {
            "data_folder_in": os.path.join(folder, "queue"),
            "data_folder_out": os.path.join(folder, "queue"),
            "control_folder": os.path.join(folder, "control"),
            "processed_folder": os.path.join(folder, "processed"),
            "polling_interval": 0.1,
        }
    else:
        options["transport_options"] = {"polling_interval": 0.05}
    return options


def open_node(node: str, queue: str, *, connect_timeout: float) -> Connection:
    """A connection to one node (of a cluster), without heartbeats, for a short-lived command or
    the producer; an error that names the node (password masked) if it does not answer."""
    options = connection_options(node, heartbeat=0, connect_timeout=connect_timeout)
    conn = Connection(node, **options)
    try:
        conn.ensure_connection(max_retries=0)
    except Exception as exc:
        error = translate(exc, Place("connect to", node, queue), conn)
        with contextlib.suppress(Exception):
            conn.collect()
        if error is None:
            raise
        raise error from exc
    return conn


def translate(exc: BaseException, where: Place, conn: Connection | None) -> BrokerError | None:
    """Our error for ``exc`` raised while doing ``where``, or ``None`` when it is not a broker
    error (a bug of ours, which should surface as it is)."""
    if isinstance(exc, BrokerError) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OperationalError):
        return classify(exc.__cause__ or exc, where)
    if isinstance(exc, (*PERMANENT, OSError, *errors_of(conn))):
        return classify(exc, where)
    return None


def classify(exc: BaseException, where: Place) -> BrokerRefused | BrokerUnavailable:
    """Permanent or transient, with a message that names the place and holds no secret."""
    if isinstance(exc, PERMANENT):
        return BrokerRefused(f"cannot {where}: {describe(exc)}")
    if isinstance(exc, socket.gaierror):
        return BrokerUnavailable(f"cannot {where}: cannot resolve host ({exc})")
    return BrokerUnavailable(f"cannot {where}: {describe(exc)}")


def errors_of(conn: Connection | None) -> tuple[type[BaseException], ...]:
    """The connection and channel errors of ``conn``'s kombu transport."""
    if conn is None:
        return ()
    try:
        return (*conn.connection_errors, *conn.channel_errors)
    except Exception:  # noqa: BLE001 - a transport that failed to load has no error list
        return ()


def describe(exc: BaseException) -> str:
    text = redact_text(str(exc)) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Guard:
    """The context every use of a transport's connection runs in: its I/O lock, and error
    translation (kombu, amqp and socket errors to ours, without secrets).

    One reusable object per transport rather than a generator-based context manager: it runs
    twice per message, and the difference shows in the benchmark.
    """

    __slots__ = ("_conn", "_io", "_queue", "action", "url")

    def __init__(
        self, io: threading.Lock, url: str, queue: str, conn: Callable[[], Connection | None]
    ) -> None:
        self._io = io
        self.url = url  # the node connected to, on a cluster
        self._queue = queue
        self._conn = conn
        self.action = ""

    def __enter__(self) -> None:
        self._io.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        self._io.release()
        if exc is None:
            return
        error = translate(exc, Place(self.action, self.url, self._queue), self._conn())
        if error is not None:
            raise error from exc
