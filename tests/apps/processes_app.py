"""The app of the --processes tests: a consumer that writes every message to a ledger file.

Each line is ``begin|done ID PROCESS PID``, appended in one write (O_APPEND), so lines from
several processes never interleave. ``done`` is written just before the handler returns, i.e.
just before the ack: an ID with ``done`` was handled, an ID with ``begin`` only was cut off.
"""

import os
import sys
import time

from consumer_host import Host, Message

QUEUE = os.environ["PROCESSES_TEST_QUEUE"]
LEDGER = os.environ["PROCESSES_TEST_LEDGER"]
HANDLE_SECONDS = float(os.environ.get("PROCESSES_TEST_HANDLE_SECONDS", "0"))
INDEX = os.environ.get("CONSUMER_HOST_PROCESS_INDEX", "0")

host = Host("processes-test")


def _note(what: str, message_id: object) -> None:
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {message_id} {INDEX} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@host.consumer("work", queue=QUEUE, prefetch=5)
def work(message: Message) -> None:
    _note("begin", message.body["id"])
    if HANDLE_SECONDS:
        time.sleep(HANDLE_SECONDS)  # a handler with real work to finish during a drain
    _note("done", message.body["id"])


sys.stdout.write(f"app imported process={INDEX} pid={os.getpid()}\n")
sys.stdout.flush()
