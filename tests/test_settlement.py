"""How a handler's result settles its message, driven through consumer_host.testing's Harness
(the real judge, handler runner and Settlement, no broker, no threads)."""

from __future__ import annotations

import pytest

from consumer_host import Host, Reject
from consumer_host.testing import FakeClock, Harness


def _harness(handler, **options) -> Harness:
    host = Host("shop")
    host.consumer("orders", queue="orders", **options)(handler)
    return Harness(host, clock=FakeClock())


def test_handler_exceptions_retry_with_doubling_delays_then_dead_letter():
    def handler(message):
        raise KeyError("missing")

    harness = _harness(handler, max_retries=3, retry_backoff_min=1.0, retry_backoff_max=60.0)
    settled = [harness.send("orders", {"n": 1})]
    while settled[-1].outcome == "retried":
        settled.append(harness.redeliver(settled[-1]))
    assert [(s.headers.get("x-attempt"), s.delay) for s in settled[:-1]] == [
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
    ]
    dead = settled[-1]
    assert dead.outcome == "dead_lettered"
    assert dead.headers["x-attempts"] == 4
    assert dead.headers["x-error-type"] == "KeyError"


def test_error_header_is_cut_at_500_characters():
    def handler(message):
        raise Reject("x" * 5000)

    dead = _harness(handler).send("orders", {})
    assert dead.outcome == "dead_lettered"
    assert len(dead.headers["x-error"]) == 500


@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_any_base_exception_from_a_handler_is_a_message_failure(raised):
    def handler(message):
        raise raised()

    settled = _harness(handler).send("orders", {})
    assert (settled.outcome, settled.headers["x-attempt"]) == ("retried", 2)
    assert isinstance(settled.error, raised)


def test_a_plain_handler_returning_a_coroutine_fails_instead_of_being_acked_unrun():
    async def work():
        return None

    settled = _harness(lambda message: work(), max_retries=0).send("orders", {})
    assert settled.outcome == "dead_lettered"
    assert settled.headers["x-error-type"] == "HandlerReturnedAwaitable"


def test_a_handler_changing_its_headers_does_not_change_the_copy():
    def handler(message):
        message.headers["tenant"] = "changed"
        message.headers["nested"]["k"] = "changed"
        raise ValueError("retry")

    settled = _harness(handler).send("orders", {}, headers={"tenant": "a", "nested": {"k": "v"}})
    assert settled.headers["tenant"] == "a"
    assert settled.headers["nested"] == {"k": "v"}
