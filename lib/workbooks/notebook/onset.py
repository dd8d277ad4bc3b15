"""When a change began in a series, and where it is heading: onsets, trends, time to a limit.

Pure functions of their arguments, like :mod:`workbooks.notebook.analysis`, which re-exports
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from workbooks.notebook import frames
from workbooks.notebook.frames import Direction, TimeLike

_MAD_TO_SIGMA = 1.4826  # MAD of normal noise times this is its standard deviation
_ONE_YEAR = pd.Timedelta(days=365)


# --- when did it start ----------------------------------------------------------------------


@dataclass(frozen=True)
class Onset:
    """A sustained change: where it began, the level before and after, and its shape.

    ``after`` is the median after a step, or the fitted level at the last point of a ramp.
    ``noise`` is the robust standard deviation the change was judged against.
    """

    at: pd.Timestamp
    before: float
    after: float
    direction: Direction
    kind: Literal["step", "ramp"]
    noise: float = math.nan

    @property
    def shift(self) -> float:
        return self.after - self.before

    @property
    def ratio(self) -> float | None:
        return self.after / self.before if self.before else None


def find_onset(
    series: pd.Series,
    *,
    min_shift: float = 4.0,
    min_relative: float = 0.1,
    min_points: int = 3,
    max_line_fit: float = 0.6,
) -> Onset | None:
    """When a sustained step or ramp began in ``series``, or None if nothing clearly changed.

    Method: on a running median (drops lone spikes), the least-squares best single split into two
    levels (step) and best hinge "flat, then straight line" (ramp); the better one is accepted
    only if (1) it leaves at most ``max_line_fit`` of the squared error of one straight line
    through the whole window, so slow drift is not an onset; (2) the shift is at least
    ``min_shift`` robust standard deviations of the noise (MAD before the onset, or of the
    point-to-point differences, whichever is larger) and (3) at least ``min_relative`` of the
    level before; (4) it holds: ``min_points`` points after it (for a step) and the last
    ``min_points`` points sit beyond the midpoint. A change already under way when the window
    starts is no onset: see :func:`trend`.
    """
    clean = frames.clean(series)
    n = len(clean)
    if n < 2 * min_points + 2:
        return None
    raw = clean.to_numpy(dtype=float)
    seconds = (clean.index - clean.index[0]).total_seconds().to_numpy()
    t = seconds / (seconds[-1] or 1.0)
    width = max(3, min_points | 1)  # odd
    smooth = pd.Series(raw).rolling(width, center=True, min_periods=1).median().to_numpy()
    spread = float(np.std(smooth)) or 1.0
    z = (smooth - smooth.mean()) / spread  # scale-free, so bytes and ratios behave alike

    line_sse = _line_sse(t, z)
    step_k, step_sse = _best_step(z, min_points)
    ramp_k, ramp_sse = _best_hinge(t, z, min_points)
    kind: Literal["step", "ramp"] = "step" if step_sse <= ramp_sse else "ramp"
    k, best_sse = (step_k, step_sse) if kind == "step" else (ramp_k, ramp_sse)
    if line_sse <= 0 or best_sse > max_line_fit * line_sse:
        return None

    before = float(np.median(raw[:k]))
    if kind == "step":
        after = float(np.median(raw[k:]))
    else:
        hinge = np.maximum(0.0, seconds - seconds[k])
        slope, intercept = np.polyfit(hinge, raw, 1)
        after = float(intercept + slope * hinge[-1])
    shift = after - before
    noise = max(_robust_sigma(raw[:k]), _robust_sigma(np.diff(raw)) / math.sqrt(2))
    if shift == 0 or abs(shift) < min_shift * noise or abs(shift) < min_relative * abs(before):
        return None
    midpoint = before + shift / 2
    if not _beyond(raw[-min_points:], midpoint, shift):
        return None
    if kind == "step" and not _beyond(raw[k : k + min_points], midpoint, shift):
        return None
    return Onset(
        at=clean.index[k],
        before=before,
        after=after,
        direction="up" if shift > 0 else "down",
        kind=kind,
        noise=noise,
    )


# --- where is it heading --------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """Least-squares line through the points: ``slope`` in value units per second.

    ``r2`` is the share of variance the line explains (1.0 for a perfectly flat series);
    ``fitted_end`` is the line's value at the last point.
    """

    slope: float
    r2: float
    points: int
    fitted_end: float = math.nan
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @property
    def per_hour(self) -> float:
        return self.slope * 3600.0


def trend(series: pd.Series, *, since: TimeLike | None = None) -> Trend:
    """Fit a straight line to the points since ``since`` (all of them by default)."""
    clean = frames.clean(series)
    start, end = frames.span(clean, since=since, tail=None)
    clean = frames.between(clean, start, end)
    if len(clean) < 2:
        return Trend(slope=math.nan, r2=math.nan, points=len(clean), start=start, end=end)
    seconds = (clean.index - clean.index[0]).total_seconds().to_numpy()
    values = clean.to_numpy(dtype=float)
    slope, intercept = np.polyfit(seconds, values, 1)
    residual = float(np.sum((values - (intercept + slope * seconds)) ** 2))
    total = float(np.sum((values - values.mean()) ** 2))
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return Trend(
        slope=float(slope),
        r2=r2,
        points=len(clean),
        fitted_end=float(intercept + slope * seconds[-1]),
        start=start,
        end=end,
    )


def time_to_limit(
    series: pd.Series,
    limit: float,
    *,
    since: TimeLike | None = None,
    direction: Direction = "up",
    min_r2: float = 0.5,
    horizon: pd.Timedelta = _ONE_YEAR,
) -> pd.Timedelta | None:
    """How long from the last point until ``limit`` is crossed at the fitted slope.

    ``direction="down"`` for a limit approached from above (free disk space reaching zero).
    Zero if the last point is already past the limit; None if the series is flat or moving
    away, the line explains less than ``min_r2`` of the variance, or the answer exceeds
    ``horizon``.
    """
    clean = frames.clean(series)
    clean = frames.between(clean, *frames.span(clean, since=since, tail=None))
    if clean.empty:
        return None
    last = float(clean.iloc[-1])
    remaining = limit - last if direction == "up" else last - limit
    if remaining <= 0:
        return pd.Timedelta(0)
    fit = trend(clean)
    speed = fit.slope if direction == "up" else -fit.slope
    if fit.points < 3 or not math.isfinite(speed) or speed <= 0 or fit.r2 < min_r2:
        return None
    seconds = remaining / speed
    if seconds > horizon.total_seconds():
        return None
    return pd.Timedelta(seconds=round(seconds))


def _robust_sigma(values: np.ndarray) -> float:
    if len(values) == 0:
        return 0.0
    return _MAD_TO_SIGMA * float(np.median(np.abs(values - np.median(values))))


def _beyond(values: np.ndarray, midpoint: float, shift: float) -> bool:
    middle = float(np.median(values))
    return middle > midpoint if shift > 0 else middle < midpoint


def _line_sse(t: np.ndarray, y: np.ndarray) -> float:
    tc, yc = t - t.mean(), y - y.mean()
    return float(np.sum(yc**2) - np.sum(tc * yc) ** 2 / np.sum(tc**2))


def _best_step(y: np.ndarray, min_points: int) -> tuple[int, float]:
    """Split index k (first point of the new level) with the least squared error, and that error."""
    n = len(y)
    splits = np.arange(min_points, n - min_points + 1)
    left_sum = np.cumsum(y)[splits - 1]
    total = y.sum()
    explained = left_sum**2 / splits + (total - left_sum) ** 2 / (n - splits) - total**2 / n
    sse = float(np.sum((y - y.mean()) ** 2)) - explained
    best = int(np.argmin(sse))
    return int(splits[best]), float(sse[best])


def _best_hinge(t: np.ndarray, y: np.ndarray, min_points: int) -> tuple[int, float]:
    """Hinge index k for ``y = a + b * max(0, t - t[k])`` with the least squared error."""
    n = len(y)
    hinges = np.arange(min_points, n - min_points)

    def suffix(values: np.ndarray) -> np.ndarray:
        return np.cumsum(values[::-1])[::-1][hinges]

    after = n - hinges
    tk = t[hinges]
    sum_t, sum_tt, sum_ty, sum_y = suffix(t), suffix(t * t), suffix(t * y), suffix(y)
    sum_x = sum_t - after * tk
    sum_xx = sum_tt - 2 * tk * sum_t + after * tk**2
    sum_xy = sum_ty - tk * sum_y
    sxx = sum_xx - sum_x**2 / n
    sxy = sum_xy - sum_x * y.sum() / n
    sse = float(np.sum((y - y.mean()) ** 2)) - sxy**2 / np.where(sxx > 0, sxx, np.inf)
    best = int(np.argmin(sse))
    return int(hinges[best]), float(sse[best])
