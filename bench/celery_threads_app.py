"""The Celery threads contestant: ``celery -A bench.celery_threads_app worker --pool threads``.

Late acks (acked after the task returns, like the others) and a prefetch multiplier of 2, so with
``--concurrency 64`` up to 128 are prefetched and 64 run: the same slack Dramatiq's worker has.
"""

from __future__ import annotations

import os

from celery import Celery

from bench.workload import Run, handle_sync, sync_client

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TASK = "bench.work"

app = Celery("bench", broker=AMQP_URL)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=2,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
)

if "BENCH_QUEUE" in os.environ:  # the worker; the publisher only needs the app and the name
    run = Run.from_env()
    client = sync_client(run)

    @app.task(name=TASK, acks_late=True, ignore_result=True)
    def work() -> None:
        handle_sync(run, client)
