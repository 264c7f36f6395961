"""The host the chaos tests run through `consumer-host run`, configured from CHAOS_* variables.

Every handled id is recorded in a Redis hash outside the host (the ledger), before the ack, so a
kill between the two shows up as a duplicate, never as a loss.
"""

import os
import threading

import redis

from consumer_host import BrokerCircuitOptions, Host, Message

env = os.environ
ledger = redis.Redis.from_url(env["CHAOS_LEDGER_URL"])
key = env["CHAOS_LEDGER_KEY"]
work = float(env.get("CHAOS_WORK_MS", "0")) / 1000

host = Host(
    "chaos",
    broker_circuit=BrokerCircuitOptions(
        threshold=int(env.get("CHAOS_BREAKER_THRESHOLD", "5")),
        window=60.0,
        cooldown=float(env.get("CHAOS_BREAKER_COOLDOWN", "2")),
    ),
)


@host.consumer(
    "chaos",
    queue=env["CHAOS_QUEUE"],
    pool=int(env.get("CHAOS_POOL", "4")),
    prefetch=int(env.get("CHAOS_PREFETCH", "20")),
    heartbeat=float(env.get("CHAOS_HEARTBEAT", "20")),
    max_retries=int(env.get("CHAOS_MAX_RETRIES", "3")),
    retry_backoff_min=0.01,
    retry_backoff_max=0.05,
    max_body_bytes=4096,
    reconnect_backoff_min=float(env.get("CHAOS_RECONNECT_MIN", "0.5")),
    reconnect_backoff_max=float(env.get("CHAOS_RECONNECT_MAX", "30")),
    claim_after=float(env.get("CHAOS_CLAIM_AFTER", "60")),
)
def handle(message: Message) -> None:
    body = message.body
    if not isinstance(body, dict) or "id" not in body:
        raise ValueError(f"not a chaos message: {body!r}"[:80])
    ident = body["id"]
    if work:
        ledger.hincrby(f"{key}:started", ident, 1)
        threading.Event().wait(work)
    if body.get("poison"):
        raise RuntimeError(f"poison message {ident}")
    ledger.hincrby(key, ident, 1)


if env.get("CHAOS_CRASHY"):

    @host.worker(
        "crashy",
        critical=env.get("CHAOS_CRASHY") == "critical",
        max_restarts=5,
        backoff_min=0.01,
        backoff_max=0.02,
    )
    def crashy(stop: threading.Event) -> None:
        raise RuntimeError("crash loop")
