"""Apps for the CLI tests, chosen by the CONSUMER_HOST_TEST_MODE environment variable."""

import os
import sys
import threading

from consumer_host import Host

mode = os.environ.get("CONSUMER_HOST_TEST_MODE", "idle")
host = Host("cli-test")


@host.worker("steady", pool=2)
def steady(stop: threading.Event) -> None:
    # One write, so the line cannot interleave with a log line from another thread.
    sys.stdout.write("steady running\n")
    sys.stdout.flush()
    stop.wait()
    if mode == "slow-drain":
        threading.Event().wait(30)  # a drain that takes far too long


if mode == "critical":

    @host.worker("vital", critical=True, max_restarts=2, backoff_min=0.01, backoff_max=0.02)
    def vital(stop: threading.Event) -> None:
        raise RuntimeError("the database is gone")


if mode == "leftover-thread":

    @host.worker("spawner")
    def spawner(stop: threading.Event) -> None:
        # A handler's own non-daemon thread that never ends: it must not hold the process.
        threading.Thread(target=threading.Event().wait, name="users-thread", daemon=False).start()
        sys.stdout.write("thread spawned\n")
        sys.stdout.flush()
        stop.wait()


if mode == "import-error":
    raise ImportError("this app cannot start: missing setting SHOP_DB", name="shop_settings")

not_a_host = object()
print("app imported", file=sys.stderr, flush=True)
