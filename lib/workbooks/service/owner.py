"""Who holds a claimed run: ``host:pid:instance``, and whether that process is certainly gone."""

from __future__ import annotations

import os
import socket
import uuid

# Identifies this process even when a restarted one gets the same pid (pid 1 in a container).
_INSTANCE = uuid.uuid4().hex[:12]


def owner_id() -> str:
    """``host:pid:instance``, the claimant a heartbeat and a liveness check refer to."""
    return f"{socket.gethostname()}:{os.getpid()}:{_INSTANCE}"


def owner_is_dead(owner: str | None) -> bool:
    """Whether the process behind ``owner`` is certainly gone (only knowable on this host)."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, instance = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return instance != _INSTANCE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
