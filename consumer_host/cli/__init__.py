"""The ``consumer-host`` command line: one module per command family, app loading in ``config``.

The top layer: it may import anything in the package; nothing in the package imports it.
"""

from __future__ import annotations

from .main import cli, main

__all__ = ["cli", "main"]
