"""low-disk-space, the pure part: each filesystem of a host judged from its own series.

For every mountpoint: how full it is (bytes and inodes) now and in its baseline, how it got
there (steady growth, one step such as a large download, or flat), when it will be full at
the current pace, and whether it is read-only. No I/O and no findings here: the steps in
:mod:`workbooks.runbooks.low_disk_space` read these and record what they mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from workbooks.notebook import analysis

Shape = Literal["growing", "step", "flat"]
# Growth slower than this share of the size per hour is no growth (logs of a quiet host).
MIN_GROWTH_SHARE_PER_HOUR = 0.001
# Without an onset, a fit over the whole window must explain this much to call it growth.
MIN_R2 = 0.8


@dataclass(frozen=True)
class Usage:
    """One resource of a filesystem (bytes or inodes): level, pace and time until none is left.

    ``per_hour`` is how fast the used amount grows (bytes or inodes per hour, negative when it
    shrinks); ``time_to_full`` is None when it is not heading for full within a year.
    """

    share: float  # used now, 0..1
    baseline_share: float  # median used in the baseline window (NaN without one)
    per_hour: float
    time_to_full: pd.Timedelta | None
    shape: Shape
    onset: analysis.Onset | None
    step: float  # size of the step (used units) when shape == "step", else 0


@dataclass(frozen=True)
class Filesystem:
    """One mountpoint of the host: bytes, inodes (None when not reported), read-only state."""

    mountpoint: str
    size_bytes: float
    avail_bytes: float
    bytes: Usage
    inodes: Usage | None
    readonly_since: pd.Timestamp | None  # when it turned read-only; None if writable now

    @property
    def readonly(self) -> bool:
        return self.readonly_since is not None


def usage(
    used_share: pd.Series,
    baseline_share: pd.Series,
    free: pd.Series,
    total: float,
) -> Usage:
    """Judge one resource from its used share, its baseline and its free amount (bytes, inodes)."""
    share = _last(used_share)
    before = float(baseline_share.dropna().median()) if len(baseline_share.dropna()) else math.nan
    minimum = MIN_GROWTH_SHARE_PER_HOUR * total
    onset = analysis.find_onset(free)
    since: pd.Timestamp | None = None
    step = 0.0
    shape: Shape
    if onset is not None and onset.direction == "down":
        # A ramp is fitted from where it began; after a step, only the points after it tell
        # whether it still grows.
        since = onset.at
        shape = "growing" if onset.kind == "ramp" else "step"
        step = -onset.shift if shape == "step" else 0.0
        fit = analysis.trend(free, since=since)
    else:
        onset = None
        fit = analysis.trend(free)
        growing = -fit.per_hour >= minimum and fit.r2 >= MIN_R2  # under way before the window
        shape = "growing" if growing else "flat"
    per_hour = -fit.per_hour if math.isfinite(fit.per_hour) else 0.0
    ttl = None
    if _last(free) <= 0:
        ttl = pd.Timedelta(0)
    elif shape != "flat" and per_hour >= minimum:
        ttl = analysis.time_to_limit(free, 0.0, since=since, direction="down")
    return Usage(share, before, per_hour, ttl, shape, onset, step)


def filesystems(
    used: pd.DataFrame,
    used_baseline: pd.DataFrame | None,
    avail: pd.DataFrame,
    size: pd.DataFrame,
    inodes: pd.DataFrame,
    inodes_baseline: pd.DataFrame | None,
    files_free: pd.DataFrame,
    readonly: pd.DataFrame,
) -> list[Filesystem]:
    """Every mountpoint found in ``used`` (long frames by ``mountpoint``), most urgent first."""
    found = []
    wide = {
        name: _wide(frame)
        for name, frame in {
            "used": used,
            "used_baseline": used_baseline,
            "avail": avail,
            "size": size,
            "inodes": inodes,
            "inodes_baseline": inodes_baseline,
            "files_free": files_free,
            "readonly": readonly,
        }.items()
    }
    for mountpoint in wide["used"].columns:
        column = {name: _column(frame, mountpoint) for name, frame in wide.items()}
        size_bytes = _last(column["size"])
        avail_now = _last(column["avail"])
        if not math.isfinite(size_bytes) or not math.isfinite(avail_now):
            continue
        bytes_usage = usage(column["used"], column["used_baseline"], column["avail"], size_bytes)
        inode_usage = None
        if len(column["inodes"].dropna()) and len(column["files_free"].dropna()):
            share = _last(column["inodes"])
            total = _last(column["files_free"]) / max(1.0 - share, 1e-9)
            inode_usage = usage(
                column["inodes"], column["inodes_baseline"], column["files_free"], total
            )
        found.append(
            Filesystem(
                str(mountpoint),
                size_bytes,
                avail_now,
                bytes_usage,
                inode_usage,
                _readonly_since(column["readonly"]),
            )
        )
    return sorted(found, key=urgency)


def urgency(fs: Filesystem) -> tuple[int, float, float]:
    """Sort key: read-only first, then the soonest full (bytes or inodes), then the fullest."""
    ttls = [u.time_to_full for u in (fs.bytes, fs.inodes) if u and u.time_to_full is not None]
    soonest = min(t.total_seconds() for t in ttls) if ttls else math.inf
    fullest = max(u.share for u in (fs.bytes, fs.inodes) if u is not None)
    return (0 if fs.readonly else 1, soonest, -fullest)


def hours(value: pd.Timedelta | None) -> float | None:
    return value.total_seconds() / 3600 if value is not None else None


def _readonly_since(series: pd.Series) -> pd.Timestamp | None:
    clean = series.dropna()
    if clean.empty or clean.iloc[-1] < 1:
        return None
    writable = clean[clean < 1]
    after = clean[clean.index > writable.index[-1]] if len(writable) else clean
    return pd.Timestamp(after.index[0])


def _wide(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame()
    return analysis.to_wide(frame, "mountpoint", agg="max")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name].dropna() if name in frame.columns else pd.Series(dtype=float)


def _last(series: pd.Series) -> float:
    clean = series.dropna()
    return float(clean.iloc[-1]) if len(clean) else math.nan
