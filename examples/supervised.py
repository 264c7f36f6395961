"""A host with two plain workers: a steady heartbeat and a flaky one that crashes and restarts.

Run it with ``python examples/supervised.py`` and stop it with Ctrl-C.
"""

import random
import threading

import structlog

from consumer_host import Host
from consumer_host.operating.logs import configure_logging

host = Host("demo")
log = structlog.get_logger("demo")


@host.worker("heartbeat")
def heartbeat(stop: threading.Event) -> None:
    beats = 0
    while not stop.wait(1.0):
        beats += 1
        log.info("beat", beats=beats)


@host.worker("flaky", pool=2, backoff_min=0.5, backoff_max=4.0)
def flaky(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if random.random() < 0.2:
            raise RuntimeError("flaky worker fell over")


if __name__ == "__main__":
    configure_logging("auto", "info")
    raise SystemExit(host.run())
