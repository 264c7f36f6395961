"""A consumer app for CLI tests: records every order it handles in the file ORDERS_LOG."""

import json
import os

from consumer_host import Host, Message

host = Host("orders-test")


@host.consumer("orders", queue=os.environ.get("ORDERS_QUEUE", "orders"), pool=2)
def handle(message: Message) -> None:
    with open(os.environ["ORDERS_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(message.body) + "\n")
