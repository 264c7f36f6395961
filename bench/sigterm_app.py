"""A host whose handler takes 2 s, for timing SIGTERM to exit."""

import os
import threading

from consumer_host import Host, Message

host = Host("sigterm-bench")


@host.consumer("slow", queue=os.environ["BENCH_QUEUE"], prefetch=5)
def slow(message: Message) -> None:
    print("handler started", flush=True)
    threading.Event().wait(2.0)
