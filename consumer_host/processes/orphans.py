"""A child of ``--processes`` ends with its parent, at once where the kernel can say so.

On Linux, ``prctl(PR_SET_PDEATHSIG)`` has the kernel signal the child the moment the parent dies
(a SIGKILLed parent included). Not SIGTERM itself: the kernel sends the signal once for every
parent thread the child is handed to while the parent's threads die, and a second SIGTERM ends
a host's drain at once. So the kernel sends :data:`PARENT_DEATH_SIGNAL`, and its handler sends
this process one SIGTERM, the first time only: the child drains as for any SIGTERM. Elsewhere a
thread polls ``getppid()`` every second instead (see ``parent._watch_parent``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from types import FrameType

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1

#: What the kernel sends a child whose parent died (a real-time signal no library claims).
PARENT_DEATH_SIGNAL = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else None

_told = [False]


def _parent_died(_signum: int, _frame: FrameType | None) -> None:
    # Runs in the main thread, one handler at a time: a plain flag is enough.
    if not _told[0]:
        _told[0] = True
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int) -> bool:
    """Have the kernel start this process's drain when ``parent`` dies; ``True`` when it took
    the request (Linux, called from the main thread)."""
    if (
        not sys.platform.startswith("linux")
        or PARENT_DEATH_SIGNAL is None
        or threading.current_thread() is not threading.main_thread()
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        signal.signal(PARENT_DEATH_SIGNAL, _parent_died)
        if libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError, ValueError):
        return False
    if os.getppid() != parent:
        _parent_died(int(PARENT_DEATH_SIGNAL), None)  # it died before the request took
    return True
