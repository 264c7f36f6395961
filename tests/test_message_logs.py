"""Logs a user can follow: one DEBUG line per message step, and a handler's own log lines carry
the message's id, instance and queue (structlog and stdlib logging alike)."""

from __future__ import annotations

import json
import signal

from .brokers import AMQP_URL, unique_queue
from .helpers import wait_until
from .test_cli import APPS, start


def test_each_message_is_followable_through_the_logs(amqp_broker):
    queue = unique_queue()
    amqp_broker.publish(queue, {"amount": 5}, message_id="m-ok")
    amqp_broker.publish(queue, {"amount": 7, "fail": True}, message_id="m-bad")
    process = start(
        "run",
        str(APPS / "logging_app.py"),
        "--log-level",
        "debug",
        "--log-format",
        "json",
        env={"CONSUMER_HOST_BROKER_URL": AMQP_URL, "LOGGING_QUEUE": queue},
    )
    lines: list[dict] = []
    try:

        def seen_dead_letter() -> bool:
            line = process.stdout.readline()
            if line.startswith("{"):
                lines.append(json.loads(line))
            return any(e["event"] == "message_dead_lettered" for e in lines)

        wait_until(seen_dead_letter, timeout=20, what="the dead letter")
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    lines += [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def of(message_id: str) -> list[dict]:
        return [e for e in lines if e.get("message_id") == message_id]

    ok = [e["event"] for e in of("m-ok")]
    assert ok[0] == "message_received"
    assert "charging" in ok
    assert "stdlib line for 5" in ok
    assert ok[-1] == "message_acked"
    bad = [e["event"] for e in of("m-bad")]
    assert bad[0] == "message_received"
    assert bad[-1] == "message_dead_lettered"
    for event in of("m-ok") + of("m-bad"):
        assert event["instance"] == "orders"
        assert event["queue"] == queue
    tracebacks = [e for e in of("m-bad") if "exception" in e]
    assert len(tracebacks) == 1  # the failing message's traceback, once
