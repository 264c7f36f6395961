"""The host the hostile-input scenarios run through `consumer-host run`: a handler that does,
on request of the message it is given, everything a handler must not be able to do to the host.

A body ``{"id": n}`` is handled and counted in the ledger (a Redis hash outside the host, written
before the ack). ``{"id": n, "raise": NAME}`` raises one of :data:`RAISES` instead;
``{"id": n, "kill": true}`` ends the process on the spot (``os._exit(1)``), counting the kill
first. With ``CHAOS_ASYNC=1`` the handler is ``async def`` and awaits before it records anything,
so a message acked before its coroutine ran shows up as lost.
"""

import asyncio
import os
import threading
from typing import Any

import redis

from consumer_host import Host, Message

env = os.environ
ledger = redis.Redis.from_url(env["CHAOS_LEDGER_URL"])
key = env["CHAOS_LEDGER_KEY"]
work = float(env.get("CHAOS_WORK_MS", "0")) / 1000


class Hostile(BaseException):
    """A BaseException subclass of the user's own, as some frameworks raise for cancellation."""


class Unprintable(Exception):
    """An exception that cannot be described: its ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ raised")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ raised")


RAISES: dict[str, type[BaseException]] = {
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "GeneratorExit": GeneratorExit,
    "Hostile": Hostile,
    "Unprintable": Unprintable,
}


def act(body: Any) -> None:
    """What the message asks for: be counted, raise, or kill the process."""
    if not isinstance(body, dict) or "id" not in body:
        raise ValueError("not a chaos message")
    ident = body["id"]
    if body.get("kill"):
        ledger.hincrby(f"{key}:kills", ident, 1)
        os._exit(1)
    raising = body.get("raise")
    if raising:
        ledger.hincrby(f"{key}:raised", ident, 1)
        raise RAISES[raising]()
    ledger.hincrby(key, ident, 1)


def began(body: Any) -> None:
    """With a work time set, note that the handler started (the drain must finish it)."""
    if work and isinstance(body, dict) and "id" in body:
        ledger.hincrby(f"{key}:started", body["id"], 1)


host = Host("hostile")
options: dict[str, Any] = {
    "queue": env["CHAOS_QUEUE"],
    "pool": int(env.get("CHAOS_POOL", "1")),
    "prefetch": int(env.get("CHAOS_PREFETCH", "10")),
    "concurrency": int(env.get("CHAOS_CONCURRENCY", "1")),
    "max_retries": int(env.get("CHAOS_MAX_RETRIES", "2")),
    "max_deliveries": int(env.get("CHAOS_MAX_DELIVERIES", "5")),
    "retry_backoff_min": 0.01,
    "retry_backoff_max": 0.05,
    "reconnect_backoff_min": 0.2,
    "reconnect_backoff_max": 2.0,
    "claim_after": float(env.get("CHAOS_CLAIM_AFTER", "60")),
}
if env.get("CHAOS_QUORUM"):
    options["queue_arguments"] = {"x-queue-type": "quorum"}

if env.get("CHAOS_ASYNC"):

    @host.consumer("hostile", **options)
    async def handle_async(message: Message) -> None:
        began(message.body)
        await asyncio.sleep(work or 0.005)  # the ack must wait for what comes after this
        act(message.body)

else:

    @host.consumer("hostile", **options)
    def handle(message: Message) -> None:
        began(message.body)
        if work:
            threading.Event().wait(work)
        act(message.body)
