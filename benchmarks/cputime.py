"""The CPU time of a benchmark's processes and of all they start, on Linux.

``RUSAGE_CHILDREN`` counts a process's descendants once they are reaped, each by its parent.
A run's kernel forks chart drawers (``workbooks.notebook.drawing``); when the kernel ends they
are orphaned, reparented and reaped elsewhere, and their CPU time would be lost. After
:func:`count_descendants_cpu` this process is their subreaper (``PR_SET_CHILD_SUBREAPER``):
orphans come here, and :func:`reap_orphans` waits for them, so the CPU time of a measured
command counts every process it led to.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
ORPHANS_TIMEOUT_SECONDS = 10.0
_state = {"counted": False}


def count_descendants_cpu() -> bool:
    """Make this process the subreaper of its descendants; False where that is not possible
    (not Linux): CPU times are then not reported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _state["counted"] = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _state["counted"] = False
    return _state["counted"]


def cpu_counted() -> bool:
    return _state["counted"]


def descendants_cpu() -> float:
    """CPU seconds of this process's reaped descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reap_orphans() -> bool:
    """Wait for the descendants left after a measured process (reparented here), so their CPU
    is counted; call only while this process has no other children. False if some were still
    running after ``ORPHANS_TIMEOUT_SECONDS`` (their CPU then counts later, or never)."""
    deadline = time.monotonic() + ORPHANS_TIMEOUT_SECONDS
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return True
        if pid == 0:
            if time.monotonic() > deadline:
                print(
                    "  processes still running after the measured one: CPU not counted",
                    file=sys.stderr,
                    flush=True,
                )
                return False
            time.sleep(0.005)
