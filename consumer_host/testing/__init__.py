"""Helpers for testing code that runs on consumer-host.

* :class:`FakeClock`: a clock you move by hand (backoff, circuits, timeouts without sleeping).
* :class:`Harness`: drive a host's registered consumers and Celery tasks without a broker, in
  process and synchronously, through the real decoding, middleware and settlement code, and see
  each message's outcome (:class:`Settled`). The ``consumer_harness`` pytest fixture (installed
  with consumer-host as a pytest plugin) makes one per test.

Imports: the whole package (this sits on top, beside the CLI).
"""

from __future__ import annotations

from .clock import FakeClock
from .harness import Harness
from .recording import RecordingPublisher, RecordingTransport, Settled

__all__ = ["FakeClock", "Harness", "RecordingPublisher", "RecordingTransport", "Settled"]
