"""Run-time control over the health server: pause and resume a consumer, quiet the host.

Off unless a token is configured (``CONSUMER_HOST_CONTROL_TOKEN``): probes and scrapes come
from off-host and stay open, but changing what a host does needs ``Authorization: Bearer
<token>``, compared in constant time. A wrong or missing token is a 401 and changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Protocol

from consumer_host.errors import ConfigError

from .health import Request, Response, Router, json_response

#: Where the CLI and ``Host.run()`` read the token from.
TOKEN_VARIABLE = "CONSUMER_HOST_CONTROL_TOKEN"  # noqa: S105 - a variable's name, not a secret


class Controllable(Protocol):
    """What the control endpoints act on: a host, or a parent of host processes."""

    def pause(self, name: str, *, wait: float = ...) -> list[str]: ...

    def resume(self, name: str) -> list[str]: ...

    def quiet(self, *, wait: float = ...) -> None: ...


def install(router: Router, target: Controllable, token: str, consumers: Iterable[str]) -> None:
    """Add ``POST /consumers/NAME/pause|resume`` for each consumer, and ``POST /quiet``."""
    if not token:
        raise ConfigError(
            f"{TOKEN_VARIABLE} is empty: set a token, or unset it to turn control off"
        )
    expected = token.encode()
    for name in consumers:
        router.add(
            "POST", f"/consumers/{name}/pause", _guarded(expected, _acting(_at_once(target), name))
        )
        router.add(
            "POST", f"/consumers/{name}/resume", _guarded(expected, _acting(target.resume, name))
        )

    def quiet() -> dict[str, object]:
        target.quiet(wait=0.0)
        return {"quiet": True}

    router.add("POST", "/quiet", _guarded(expected, quiet))


Action = Callable[[], dict[str, object]]


def _at_once(target: Controllable) -> Callable[[str], list[str]]:
    """Pause without waiting for intake to stop: the health server's one thread must keep
    answering probes. Callers that want to wait poll ``/status`` (the CLI does)."""
    return lambda name: target.pause(name, wait=0.0)


def _acting(method: Callable[[str], list[str]], name: str) -> Action:
    return lambda: {"instances": method(name)}


def _guarded(expected: bytes, act: Action) -> Callable[[Request], Response]:
    def route(request: Request) -> Response:
        if not authorized(request.headers.get("authorization", ""), expected):
            response = json_response(401, {"error": "a valid bearer token is required"})
            return Response(
                401, response.content_type, response.body, {"WWW-Authenticate": "Bearer"}
            )
        try:
            return json_response(200, {"ok": True, **act()})
        except ConfigError as exc:
            return json_response(409, {"ok": False, "error": str(exc)})

    return route


def authorized(header: str, expected: bytes) -> bool:
    """``Bearer <token>`` with the expected token, compared in constant time."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected)
