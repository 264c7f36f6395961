"""TLS is verified by default: against a local TLS server whose CA nobody trusts, and against one
the process trusts but whose certificate names another host."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

import pytest
import trustme

from consumer_host.errors import BrokerError, BrokerRefused
from consumer_host.transports.base import QueueSpec
from consumer_host.transports.kombu_transport import KombuTransport
from consumer_host.transports.redis_lists import RedisListTransport

SPEC = QueueSpec(queue="tls", dead_letter="tls.dlq")


@pytest.fixture
def tls_server():
    """Start a TLS listener on loopback for a certificate naming ``names``; yield (port, ca)."""
    servers = []

    def start(*names: str) -> tuple[int, trustme.CA]:
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()

        def serve():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with contextlib.suppress(OSError), conn:
                    conn.settimeout(2)
                    context.wrap_socket(conn, server_side=True).close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((stop, thread, listener))
        return listener.getsockname()[1], ca

    yield start
    for stop, thread, listener in servers:
        stop.set()
        thread.join(5)
        listener.close()


def test_amqps_refuses_a_certificate_from_an_unknown_authority(tls_server):
    port, _ = tls_server("127.0.0.1", "localhost")
    transport = KombuTransport(f"amqps://user:pw@127.0.0.1:{port}//", SPEC, connect_timeout=3)
    with pytest.raises(BrokerRefused, match="CERTIFICATE_VERIFY_FAILED"):
        transport.connect()
    transport.close()


def test_amqps_checks_the_host_name(tls_server, tmp_path, monkeypatch):
    port, ca = tls_server("broker.example")  # trusted below, but not for 127.0.0.1
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    transport = KombuTransport(f"amqps://user:pw@127.0.0.1:{port}//", SPEC, connect_timeout=3)
    with pytest.raises(BrokerRefused, match=r"IP address mismatch|doesn't match|hostname"):
        transport.connect()
    transport.close()


def test_amqps_accepts_a_trusted_certificate_for_the_right_host(tls_server, tmp_path, monkeypatch):
    port, ca = tls_server("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    transport = KombuTransport(f"amqps://user:pw@127.0.0.1:{port}//", SPEC, connect_timeout=3)
    with pytest.raises(BrokerError) as failure:  # TLS holds; the server then speaks no AMQP
        transport.connect()
    assert "CERTIFICATE_VERIFY_FAILED" not in str(failure.value)
    transport.close()


def test_rediss_refuses_a_certificate_from_an_unknown_authority(tls_server):
    port, _ = tls_server("127.0.0.1", "localhost")
    transport = RedisListTransport(
        f"rediss://127.0.0.1:{port}/0", SPEC, instance="tls-1", connect_timeout=3
    )
    with pytest.raises(BrokerError, match="CERTIFICATE_VERIFY_FAILED"):
        transport.connect()
    transport.close()
