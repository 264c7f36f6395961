"""Listing a large dead-letter queue sees every dead letter and changes nothing (all brokers).

RabbitMQ's browse has the broker push them (one prefetch covering the queue) instead of one
``basic.get`` round trip each; its speed is measured in bench/dlq_list.py, not here."""

from __future__ import annotations

from .brokers import unique_queue
from .test_dlq import store_for

COUNT = 10_000


def test_browsing_ten_thousand_dead_letters_sees_each_once_and_leaves_them(real_broker):
    queue = unique_queue("dlqbrowse")
    real_broker.depth(queue)
    real_broker.publish_many(f"{queue}.dlq", [{"n": n} for n in range(COUNT)])
    store = store_for(real_broker, queue)
    try:
        assert sum(1 for _ in store.browse()) == COUNT
        assert sum(1 for _ in store.browse()) == COUNT, "a second look finds them all again"
    finally:
        store.close()
    assert real_broker.depth(f"{queue}.dlq") == COUNT
