"""A host run as the whole program (``Host.run``): logging, the environment, signals, the wait."""

from __future__ import annotations

import os
from typing import Protocol

import structlog

from consumer_host.operating import control
from consumer_host.operating.logs import configure_logging
from consumer_host.transports.broker import BrokerChoice, resolve_broker

from .consumers import ConsumerBuilder
from .lifecycle import Lifecycle
from .signals import ProgramSignals


class Host(Protocol):
    name: str
    broker: str | None
    control_token: str | None
    lifecycle: Lifecycle
    consumers: ConsumerBuilder

    @property
    def is_quiet(self) -> bool: ...

    def use_broker(self, choice: BrokerChoice) -> None: ...

    def start(self) -> None: ...

    def quiet(self, *, wait: float = ...) -> None: ...


def run_program(host: Host, *, install_signal_handlers: bool) -> int:
    """Configure what a library user would otherwise configure, start, serve until stopped."""
    host.lifecycle.program_mode = True
    if not structlog.is_configured():
        configure_logging("auto", "info", host=host.name)
    if not host.consumers.chosen:
        host.use_broker(resolve_broker(os.environ, code=host.broker))
    if host.control_token is None:
        host.control_token = os.environ.get(control.TOKEN_VARIABLE) or None
    signals = ProgramSignals(host.name)
    if install_signal_handlers:
        signals.install()
    try:
        host.start()
        return host.lifecycle.serve(signals, quiet=host.quiet, is_quiet=lambda: host.is_quiet)
    finally:
        signals.restore()
