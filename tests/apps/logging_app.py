"""A consumer whose handler logs through structlog and the stdlib, for the log tests."""

import logging
import os

import structlog

from consumer_host import Host, Message

host = Host("logging-test")


@host.consumer("orders", queue=os.environ["LOGGING_QUEUE"], max_retries=0)
def handle(message: Message) -> None:
    structlog.get_logger("shop").info("charging", amount=message.body["amount"])
    logging.getLogger("shop.stdlib").warning("stdlib line for %s", message.body["amount"])
    if message.body.get("fail"):
        raise ValueError("card declined")
