"""Per-message middleware: hooks in order, on the handler's thread or task, seeing each outcome;
a raising hook fails its message and is logged with its name; no middleware, no wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from structlog.testing import capture_logs

from consumer_host import ConfigError, Defer, Host, HostAlreadyRunning, Reject
from consumer_host.testing import Harness
from consumer_host.transports.broker import BrokerChoice

from .brokers import BrokerTool, unique_queue
from .helpers import wait_until


class Recorder:
    """Every hook, recorded as (name, hook, detail)."""

    def __init__(self, name: str, calls: list) -> None:
        self.name = name
        self.calls = calls

    def before(self, message):
        self.calls.append((self.name, "before", message.body))

    @contextlib.contextmanager
    def around(self, message):
        self.calls.append((self.name, "enter", message.body))
        yield
        self.calls.append((self.name, "exit", message.body))

    def after(self, message, outcome):
        self.calls.append((self.name, "after", outcome.kind))


def _host(*middleware) -> Host:
    return Host("shop", middleware=list(middleware))


def test_hooks_run_in_order_around_the_handler_and_arounds_nest():
    calls: list = []
    host = _host(Recorder("a", calls))
    host.add_middleware(Recorder("b", calls))

    @host.consumer("orders", queue="orders")
    def handle(message):
        calls.append(("handler", "run", message.body))

    assert Harness(host).send("orders", 1).outcome == "acked"
    assert calls == [
        ("a", "before", 1),
        ("b", "before", 1),
        ("a", "enter", 1),
        ("b", "enter", 1),
        ("handler", "run", 1),
        ("a", "after", "acked"),
        ("b", "after", "acked"),
        ("b", "exit", 1),
        ("a", "exit", 1),
    ]


@pytest.mark.parametrize(
    ("raised", "attempt", "outcome", "delay"),
    [
        (None, 1, "acked", None),
        (ValueError("boom"), 1, "retried", 0.5),
        (ValueError("boom"), 3, "dead_lettered", None),
        (Reject("no"), 1, "dead_lettered", None),
        (Defer(1.0), 1, "deferred", 0.8),
    ],
)
def test_after_sees_the_outcome_the_message_is_settled_with(raised, attempt, outcome, delay):
    seen = []

    class Watch:
        def after(self, message, result):
            seen.append(result)

    host = _host(Watch())

    @host.consumer("orders", queue="orders", max_retries=2, retry_backoff_min=0.5)
    def handle(message):
        if raised is not None:
            raise raised

    settled = Harness(host).send("orders", {}, attempt=attempt)
    assert settled.outcome == outcome
    [result] = seen
    assert (result.kind, result.attempt, result.delay) == (outcome, attempt, delay)
    assert result.error is raised
    assert settled.delay == delay


def test_bad_input_reaches_after_hooks_with_the_raw_body():
    seen = []

    class Watch:
        def after(self, message, outcome):
            seen.append((message.body, outcome.kind, type(outcome.error).__name__))

    host = _host(Watch())
    host.consumer("orders", queue="orders")(lambda message: None)
    assert Harness(host).send("orders", raw=b"{not json").outcome == "rejected_bad_input"
    assert seen == [(b"{not json", "rejected_bad_input", "BadMessage")]


@pytest.mark.parametrize("hook", ["before", "around", "after"])
def test_a_raising_hook_fails_the_message_like_a_handler_error_and_is_logged_by_name(hook):
    ran = []

    class Broken:
        name = "broken-middleware"

        def before(self, message):
            if hook == "before":
                raise RuntimeError("before broke")

        @contextlib.contextmanager
        def around(self, message):
            if hook == "around":
                raise RuntimeError("around broke")
            yield

        def after(self, message, outcome):
            if hook == "after":
                raise RuntimeError("after broke")

    host = _host(Broken())
    host.consumer("orders", queue="orders")(ran.append)
    with capture_logs() as logs:
        settled = Harness(host).send("orders", {"n": 1})
    assert settled.outcome == "retried"
    assert str(settled.error) == f"{hook} broke"
    assert settled.headers["x-attempt"] == 2
    failures = [e for e in logs if e["event"] == "middleware_failed"]
    assert [(e["middleware"], e["hook"]) for e in failures] == [("broken-middleware", hook)]
    assert len(ran) == (1 if hook == "after" else 0), "a failing before/around skips the handler"


def test_a_failing_handler_keeps_its_own_error_when_an_after_hook_fails_too():
    class Broken:
        def after(self, message, outcome):
            raise RuntimeError("after broke")

    host = _host(Broken())

    @host.consumer("orders", queue="orders", max_retries=0)
    def handle(message):
        raise ValueError("the handler's")

    settled = Harness(host).send("orders", {})
    assert settled.outcome == "dead_lettered"
    assert settled.headers["x-error"] == "the handler's"


def test_async_hooks_and_async_context_managers_around_an_async_handler():
    calls: list = []

    class AsyncMiddleware:
        async def before(self, message):
            await asyncio.sleep(0)
            calls.append(("before", asyncio.current_task() is not None))

        @contextlib.asynccontextmanager
        async def around(self, message):
            calls.append(("enter", message.body))
            yield
            calls.append(("exit", message.body))

        async def after(self, message, outcome):
            calls.append(("after", outcome.kind))

    host = _host(AsyncMiddleware())

    @host.consumer("orders", queue="orders")
    async def handle(message):
        calls.append(("handler", message.body))

    assert Harness(host).send("orders", 7).outcome == "acked"
    assert calls == [
        ("before", True),
        ("enter", 7),
        ("handler", 7),
        ("after", "acked"),
        ("exit", 7),
    ]


def test_async_hooks_around_a_plain_handler_run_on_its_thread():
    calls: list = []

    class AsyncMiddleware:
        async def before(self, message):
            calls.append(("before", threading.get_ident()))

        @contextlib.asynccontextmanager
        async def around(self, message):
            calls.append(("enter", threading.get_ident()))
            yield
            calls.append(("exit", threading.get_ident()))

        async def after(self, message, outcome):
            calls.append(("after", outcome.kind))

    host = _host(AsyncMiddleware())

    @host.consumer("orders", queue="orders")
    def handle(message):
        calls.append(("handler", threading.get_ident()))
        raise ValueError("retry me")

    assert Harness(host).send("orders", 1).outcome == "retried"
    here = threading.get_ident()
    assert calls == [
        ("before", here),
        ("enter", here),
        ("handler", here),
        ("after", "retried"),
        ("exit", here),
    ]


def test_without_middleware_the_consumer_runs_the_handler_itself():
    host = _host()
    host.use_broker(BrokerChoice("memory://", "test"))

    def handle(message):
        return None

    host.consumer("orders", queue=unique_queue())(handle)
    [registration] = host.registry.registrations
    consumer = registration.factory("orders")
    assert consumer.handler is handle
    assert consumer.settlement.chain is None


def test_middleware_cannot_be_added_once_the_host_has_started():
    host = _host()
    host.use_broker(BrokerChoice("memory://", "test"))
    host.start()
    try:
        with pytest.raises(HostAlreadyRunning):
            host.add_middleware(Recorder("late", []))
    finally:
        host.stop(5)


@pytest.mark.parametrize(("concurrency", "asynchronous"), [(1, False), (3, False), (3, True)])
def test_hooks_run_on_the_handlers_thread_or_task_in_a_running_host(concurrency, asynchronous):
    """A real consumer (kombu's in-process broker): hooks share the handler's thread and
    context; a raising middleware fails that message and the loop goes on with the rest."""
    tool = BrokerTool("memory")
    queue = unique_queue()
    seen: dict[str, list] = {"before": [], "handler": [], "after": []}
    lock = threading.Lock()

    class Where:
        name = "where"

        def before(self, message):
            with lock:
                seen["before"].append((message.body["n"], threading.get_ident()))
            if message.body["n"] == 0:
                raise RuntimeError("middleware refuses message 0")

        def after(self, message, outcome):
            with lock:
                seen["after"].append((message.body["n"], threading.get_ident(), outcome.kind))

    host = _host(Where())
    host.use_broker(BrokerChoice(tool.url, "test"))
    options = {"queue": queue, "concurrency": concurrency, "max_retries": 0}
    if asynchronous:

        @host.consumer("orders", **options)
        async def handle_async(message):
            with lock:
                seen["handler"].append((message.body["n"], threading.get_ident()))

    else:

        @host.consumer("orders", **options)
        def handle(message):
            with lock:
                seen["handler"].append((message.body["n"], threading.get_ident()))

    tool.publish_many(queue, [{"n": n} for n in range(6)])
    with capture_logs() as logs:
        host.start()
        try:
            wait_until(lambda: len(seen["after"]) == 6, what="six outcomes")
        finally:
            host.stop(10)
    tool.close()
    before = dict(seen["before"])
    for n, thread in seen["handler"]:
        assert before[n] == thread
    outcomes = {n: (thread, kind) for n, thread, kind in seen["after"]}
    assert outcomes[0][1] == "dead_lettered"
    assert {kind for n, (_, kind) in outcomes.items() if n != 0} == {"acked"}
    assert all(before[n] == thread for n, (thread, _) in outcomes.items())
    assert sorted(n for n, _ in seen["handler"]) == [1, 2, 3, 4, 5]
    assert any(e["event"] == "middleware_failed" and e["middleware"] == "where" for e in logs)
    status = host.status()[0]
    assert status["acked"] == 5
    assert status["dead_lettered"] == 1


def test_an_object_with_no_hook_is_refused_as_middleware():
    class Misspelt:
        def befor(self, message):
            return None

    with pytest.raises(ConfigError, match="middleware 'Misspelt' has none of the hooks before"):
        Host("shop", middleware=[Misspelt()])
    with pytest.raises(ConfigError, match="has none of the hooks"):
        Host("shop").add_middleware(object())


def test_a_hook_raising_a_base_exception_fails_only_its_message():
    class Interrupting:
        name = "interrupting"

        def before(self, message):
            raise KeyboardInterrupt

    host = _host(Interrupting())
    host.consumer("orders", queue="orders")(lambda message: None)
    with capture_logs() as logs:
        settled = Harness(host).send("orders", {})
    assert settled.outcome == "retried"
    assert isinstance(settled.error, KeyboardInterrupt)
    assert [e["middleware"] for e in logs if e["event"] == "middleware_failed"] == ["interrupting"]


def test_the_readme_middleware_example_runs_as_written(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Middleware")[1].split("\n### ")[0]
    [block] = re.findall(r"```python\n(.*?)```", section, re.S)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    host = namespace["host"]
    host.consumer("orders", queue="orders")(lambda message: None)
    Harness(host).send("orders", {}, message_id="m-7")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "m-7 acked"  # after hooks run inside the around contexts
    assert printed[1].startswith("orders 1 ")
