"""low-disk-space, the words: one filesystem's state and what to run on its host, as text.

Titles and recommendations of :mod:`workbooks.runbooks.low_disk_space`, with the numbers filled
in (share used, pace, time to full and its clock time), kept apart so the steps stay short.
"""

from __future__ import annotations

import math

import pandas as pd

from workbooks.core.findings import format_value
from workbooks.notebook.display import human_duration
from workbooks.runbooks.low_disk_space_fs import Filesystem, Usage


def state(fs: Filesystem, usage: Usage, *, version: str | None = None) -> str:
    """One sentence: what is happening to this filesystem, with its numbers."""
    mp = fs.mountpoint
    if fs.readonly:
        return f"{mp} is read-only since {fs.readonly_since:%H:%M} UTC"
    inodes = usage is fs.inodes
    what = "inodes" if inodes else "bytes"
    full = (
        f"full in about {human_duration(usage.time_to_full)}"
        if usage.time_to_full is not None
        else "not heading for full"
    )
    if usage.shape == "growing":
        pace = (
            f"{count_text(usage.per_hour)} inodes/h" if inodes else f"{size_text(usage.per_hour)}/h"
        )
        since = f" since {usage.onset.at:%H:%M} UTC" if usage.onset is not None else ""
        text = f"{mp} fills by {what} at {pace}{since}: {used(fs, usage)}, {full}"
        if inodes:
            text += f", while only {pct(fs.bytes.share)} of its bytes are used"
        return text
    if usage.shape == "step" and usage.onset is not None:
        amount = count_text(usage.step) + " inodes" if inodes else size_text(usage.step)
        return (
            f"{mp} jumped by {amount} at {usage.onset.at:%H:%M} UTC{from_version(version)} "
            "(a large download or copy), then "
            + (f"kept growing: {used(fs, usage)}, {full}" if usage.time_to_full else "flat: ")
            + ("" if usage.time_to_full else used(fs, usage))
        )
    full_now = ": full now" if usage.time_to_full == pd.Timedelta(0) else ""
    return f"{mp} is flat at {used(fs, usage)} (baseline {pct(usage.baseline_share)}){full_now}"


def used(fs: Filesystem, usage: Usage) -> str:
    if usage is fs.inodes:
        return f"{pct(usage.share)} of its inodes used"
    return f"{pct(usage.share)} of {size_text(fs.size_bytes)} used"


def bytes_advice(host: str, fs: Filesystem, version: str | None, end: pd.Timestamp) -> str:
    """What to run on the host to free bytes on ``fs``, with the deadline."""
    mp = fs.mountpoint
    if fs.bytes.shape == "step" and fs.bytes.onset is not None:
        look = (
            f"find the large new files: `sudo find {mp} -xdev -newermt "
            f"'{fs.bytes.onset.at - pd.Timedelta(minutes=5):%Y-%m-%d %H:%M}' -size +100M "
            "-exec ls -lh {} +`"
        )
    else:
        look = f"find what grows: `sudo du -xh --max-depth=2 {mp} | sort -h | tail -20`"
    if version is not None:
        hint = (
            f"model {version} was just downloaded here: delete the weights of versions no "
            "longer served from the model cache"
        )
    elif "log" in mp:
        hint = (
            "logs: check logrotate and a log level left at debug; "
            "`sudo journalctl --vacuum-size=1G`"
        )
    elif "model" in mp or "cache" in mp:
        hint = "model cache: delete the weights of versions no longer served"
    else:
        hint = "usual suspects: logs (/var/log), model caches, core dumps, container images"
    ttl = fs.bytes.time_to_full
    deadline = f" before it is full ({when(end, ttl)})" if ttl is not None else ""
    return (
        f"On {host}, {look}; {hint}. Free space or grow the volume (resize2fs / xfs_growfs)"
        f"{deadline}."
    )


def inodes_advice(host: str, fs: Filesystem, end: pd.Timestamp) -> str:
    """What to run on the host to free inodes on ``fs``, with the deadline."""
    mp = fs.mountpoint
    ttl = fs.inodes.time_to_full if fs.inodes is not None else None
    deadline = f" before they run out ({when(end, ttl)})" if ttl is not None else ""
    return (
        f"On {host}, find the directories holding the most files: `sudo find {mp} -xdev -type f "
        f"| cut -d/ -f1-5 | sort | uniq -c | sort -n | tail`; delete the small files (caches, "
        f"sessions, spool){deadline}, and prune them on a schedule. Bytes are free: growing the "
        "volume does not help unless the filesystem is recreated with more inodes (mkfs -N)."
    )


def when(end: pd.Timestamp, ttl: pd.Timedelta | None) -> str:
    """``in about 3 h 17 min, at 18:02 UTC`` counted from ``end`` (the window's)."""
    if ttl is None:
        return "not heading for full"
    at = pd.Timestamp(end) + ttl
    return f"in about {human_duration(ttl)}, at {at:%H:%M} UTC"


def from_version(version: str | None) -> str:
    return f", when model {version} rolled out" if version else ""


def pct(share: float) -> str:
    return "n/a" if share is None or not math.isfinite(share) else f"{share:.0%}"


def size_text(amount: float) -> str:
    return format_value(amount, "bytes")


def count_text(amount: float) -> str:
    """Inode counts as people say them: ``1.3 M``, ``850 k``, ``120``."""
    if abs(amount) >= 1e6:
        return f"{amount / 1e6:.1f} M"
    if abs(amount) >= 1e4:
        return f"{amount / 1e3:.0f} k"
    return f"{amount:,.0f}"
