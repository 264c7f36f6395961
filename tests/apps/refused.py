"""A critical consumer beside a plain worker, for the wrong-credentials tests (queue: QUEUE)."""

import os
import threading

from consumer_host import Host, Message

host = Host("refused-test")


@host.consumer("orders", queue=os.environ["QUEUE"], critical=os.environ.get("CRITICAL") == "1")
def handle(message: Message) -> None:
    pass


@host.worker("beat")
def beat(stop: threading.Event) -> None:
    stop.wait()
