"""The Dramatiq contestant: ``dramatiq bench.dramatiq_app --processes P --threads T``.

A RabbitmqBroker and one actor on the run's queue doing :mod:`bench.workload`'s work. Dramatiq's
worker prefetches 2 x threads per process (128 for 64 threads), enough to keep 64 busy. Retries
are off so a failure shows as a short count instead of a hidden retry.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.workload import Run, handle_sync, sync_client

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def make_broker() -> RabbitmqBroker:
    return RabbitmqBroker(url=AMQP_URL)


broker = make_broker()
dramatiq.set_broker(broker)

if "BENCH_QUEUE" in os.environ:  # the worker; the publisher only needs the broker and the name
    run = Run.from_env()
    client = sync_client(run)

    @dramatiq.actor(actor_name="bench_work", queue_name=run.queue, max_retries=0)
    def bench_work() -> None:
        handle_sync(run, client)
