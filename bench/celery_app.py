"""The Celery app the benchmark runs and publishes with."""

from __future__ import annotations

from celery import Celery


def make_app(url: str, prefetch: int) -> Celery:
    app = Celery("bench", broker=url)
    app.conf.update(
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=prefetch,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )
    return app
