"""The host the RabbitMQ cluster tests run through `consumer-host run`: one consumer on a quorum
queue, configured from CLUSTER_* variables.

Every handled id is counted in a Redis hash outside the host (the ledger), with the time it was
first handled, before the ack: a fault between the two shows up as a duplicate, never a loss.
"""

import os
import threading
import time

import redis

from consumer_host import BrokerCircuitOptions, Host, Message

env = os.environ
ledger = redis.Redis.from_url(env["CLUSTER_LEDGER_URL"])
key = env["CLUSTER_LEDGER_KEY"]
work = float(env.get("CLUSTER_WORK_MS", "0")) / 1000

host = Host("cluster", broker_circuit=BrokerCircuitOptions(threshold=5, window=60.0, cooldown=15.0))


@host.consumer(
    "cluster",
    queue=env["CLUSTER_QUEUE"],
    queue_arguments={"x-queue-type": "quorum"},
    pool=int(env.get("CLUSTER_POOL", "2")),
    prefetch=int(env.get("CLUSTER_PREFETCH", "20")),
    heartbeat=5.0,
    max_retries=1,
    retry_backoff_min=0.2,
    retry_backoff_max=0.2,
)
def handle(message: Message) -> None:
    ident = message.body["id"]
    if work:
        threading.Event().wait(work)
    if message.body.get("fail") and ident % 5 == 0 and message.attempt == 1:
        raise RuntimeError(f"first attempt of {ident} fails")
    pipe = ledger.pipeline()
    pipe.hincrby(key, ident, 1)
    pipe.hsetnx(f"{key}:at", ident, time.time())
    pipe.execute()
