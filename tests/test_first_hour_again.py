"""Issue 26, the first hour again: what a newcomer still tripped over, through the real command.

Every test here runs ``consumer-host`` in a subprocess, as a newcomer or a platform does.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .helpers import cli
from .test_first_hour import one_line_error

APPS = Path(__file__).parent / "apps"


@pytest.mark.parametrize("flags", [("--processes", "2"), ("--reload",), ()])
def test_a_health_port_in_use_is_one_line_and_exit_2(flags):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "run",
            str(APPS / "lifecycle.py"),
            "--health-port",
            str(port),
            "--health-host",
            "127.0.0.1",
            *flags,
        )
    line = one_line_error(result)
    assert f"127.0.0.1:{port}" in line
    assert "Address already in use" in line
