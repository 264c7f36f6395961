"""The host the Redis cluster tests run through `consumer-host run`: one consumer on
CLUSTER_BROKER that records every handled id, and when it was first handled, in a ledger on the
machine's own Redis (outside the cluster under test), before the ack."""

import os
import time

import redis

from consumer_host import BrokerCircuitOptions, Host, Message

env = os.environ
ledger = redis.Redis.from_url(env["CLUSTER_LEDGER_URL"])
key = env["CLUSTER_LEDGER_KEY"]

# The defaults a user gets: a failover must be ridden out without tuning the circuit.
host = Host("clusters", broker=env["CLUSTER_BROKER"], broker_circuit=BrokerCircuitOptions())


@host.consumer("orders", queue=env["CLUSTER_QUEUE"], pool=4, prefetch=20, claim_after=5.0)
def handle(message: Message) -> None:
    ident = str(message.body["id"])
    pipe = ledger.pipeline(transaction=False)
    pipe.hincrby(key, ident, 1)
    pipe.hsetnx(f"{key}:at", ident, time.time())
    pipe.execute()
