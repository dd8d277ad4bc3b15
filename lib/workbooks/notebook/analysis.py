"""Pure analysis of query results: reshape, compare with a baseline, find when a change began.

Input is the long frame every source returns: a ``timestamp`` column (``datetime64[ns, UTC]``;
naive timestamps are read as UTC), one string column per Prometheus label and a float ``value``
column, one row per sample. A baseline frame is the same query over an earlier window, its
timestamps already shifted onto the current window so the two overlay.

Everything here is a pure function of its arguments: no I/O, no plotting, no global state.
Results are small frozen dataclasses (or frames) that findings and charts read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

TimeLike = pd.Timestamp | datetime | str
Direction = Literal["up", "down"]

_NOT_LABELS = ("timestamp", "value")
_MAD_TO_SIGMA = 1.4826  # MAD of normal noise times this is its standard deviation
_ONE_YEAR = pd.Timedelta(days=365)


# --- reshaping -------------------------------------------------------------------------------


def to_wide(
    frame: pd.DataFrame,
    by: str | Sequence[str],
    *,
    agg: Literal["sum", "mean", "max", "min"] | None = None,
) -> pd.DataFrame:
    """One column per series, indexed by timestamp.

    With one label the columns are its values (``"/v1/chat"``); with several they are joined as
    ``"route=/v1/chat, code=500"``, in the order given. A missing label value reads as ``""``.
    If labels outside ``by`` split a column into several series, pass ``agg`` to combine them
    (otherwise :class:`ValueError`: better to say so than to sum latencies by accident).
    """
    names = [by] if isinstance(by, str) else list(by)
    if frame.empty:
        return pd.DataFrame(index=_utc_index([]), dtype=float)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(f"no label {missing} in this frame; its labels: {_label_columns(frame)}")
    keys = _series_keys(frame, names)
    tidy = pd.DataFrame(
        {"timestamp": _utc_index(frame["timestamp"]), "series": keys, "value": _floats(frame)}
    )
    if agg is None and tidy.duplicated(["timestamp", "series"]).any():
        others = [name for name in _label_columns(frame) if name not in names]
        raise ValueError(
            f"several series share each value of {names} (they differ in {others}): "
            "pass agg='sum', 'mean', 'max' or 'min', or aggregate in the query"
        )
    wide = tidy.groupby(["timestamp", "series"], sort=True)["value"].agg(agg or "last")
    wide = wide.unstack("series")
    wide.columns = pd.Index([str(c) for c in wide.columns], name=", ".join(names))
    wide.index = _utc_index(wide.index)
    return wide


def series_of(frame: pd.DataFrame, /, **labels: str) -> pd.Series:
    """Values of one series indexed by timestamp: the one matching ``labels``, or the only one.

    An empty frame (a query with no data) or labels that match nothing give an empty series;
    labels that match several series raise :class:`ValueError` naming the labels that differ.
    """
    if frame.empty:
        return _empty_series()
    unknown = [name for name in labels if name not in frame.columns]
    if unknown:
        raise ValueError(f"no label {unknown} in this frame; its labels: {_label_columns(frame)}")
    chosen = frame
    for name, wanted in labels.items():
        chosen = chosen[chosen[name].astype(str) == str(wanted)]
    label_columns = _label_columns(chosen)
    if label_columns and len(chosen[label_columns].drop_duplicates()) > 1:
        varying = [c for c in label_columns if chosen[c].nunique(dropna=False) > 1]
        raise ValueError(
            f"{labels or 'the frame'} matches several series; they differ in {varying}"
        )
    name = ", ".join(f"{key}={value}" for key, value in labels.items()) or "value"
    series = pd.Series(_floats(chosen), index=_utc_index(chosen["timestamp"]), name=name)
    return _clean(series, dropna=False)


# --- comparing with the baseline ------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Median of the current window against the median of the baseline over the same span.

    ``ratio`` is None when the baseline is zero or missing; ``points`` counts current samples.
    """

    current: float
    baseline: float
    ratio: float | None
    delta: float
    points: int
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None


def compare(
    current: pd.Series,
    baseline: pd.Series,
    *,
    since: TimeLike | None = None,
    tail: pd.Timedelta | str | None = None,
) -> Comparison:
    """Compare medians over ``since`` .. last point, or the last ``tail``, else the whole window."""
    now = _clean(current)
    start, end = _span(now, since=since, tail=tail)
    now = _between(now, start, end)
    before = _between(_clean(baseline), start, end)
    current_median = float(now.median()) if len(now) else math.nan
    baseline_median = float(before.median()) if len(before) else math.nan
    usable = math.isfinite(current_median) and math.isfinite(baseline_median)
    ratio = current_median / baseline_median if usable and baseline_median != 0 else None
    return Comparison(
        current=current_median,
        baseline=baseline_median,
        ratio=ratio,
        delta=current_median - baseline_median,
        points=len(now),
        start=start,
        end=end,
    )


def top_contributors(
    current: pd.DataFrame,
    baseline: pd.DataFrame | None,
    *,
    by: str,
    since: TimeLike | None = None,
    direction: Direction = "up",
    agg: Literal["sum", "mean", "max", "min"] | None = None,
) -> pd.DataFrame:
    """Rank each value of label ``by`` by how much it changed against its OWN baseline.

    Columns ``[by, current, baseline, ratio, delta]`` (medians since ``since``), most changed
    first: largest ratio for ``"up"``, smallest for ``"down"``. Values without a usable ratio (new
    label values such as a fresh model_version, or a zero baseline) follow, largest current first.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
    now = to_wide(current, by, agg=agg)
    before = to_wide(baseline, by, agg=agg) if baseline is not None else to_wide(current[:0], by)
    rows = []
    for name in list(now.columns) + [c for c in before.columns if c not in now.columns]:
        result = compare(
            now[name] if name in now.columns else _empty_series(),
            before[name] if name in before.columns else _empty_series(),
            since=since,
        )
        ratio = math.nan if result.ratio is None else result.ratio
        rows.append((name, result.current, result.baseline, ratio, result.delta))
    table = pd.DataFrame(rows, columns=[by, "current", "baseline", "ratio", "delta"])
    table = table.astype({"current": float, "baseline": float, "ratio": float, "delta": float})
    table["_no_ratio"] = table["ratio"].isna()
    table = table.sort_values(by, kind="stable").sort_values(
        ["_no_ratio", "ratio", "current"],
        ascending=[True, direction == "down", False],
        na_position="last",
        kind="stable",
    )
    return table.drop(columns="_no_ratio").reset_index(drop=True)


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
    clean = _clean(series)
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
    clean = _clean(series)
    start, end = _span(clean, since=since, tail=None)
    clean = _between(clean, start, end)
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
    clean = _clean(series)
    clean = _between(clean, *_span(clean, since=since, tail=None))
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


# --- label changes (deploys, rollouts) ------------------------------------------------------


def changes(
    frame: pd.DataFrame, *, label: str, by: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Transitions of ``label`` in an info-style gauge (``model_info{instance, model_version}``).

    One row each time a series (identified by ``by``; default: every other label) shows a value of
    ``label`` it did not show at its previous sample and that differs from its current one: the
    old value may linger for a few samples during a rollout. Columns ``timestamp``, the ``by``
    labels, ``label`` (the label's name), ``from``, ``to``. The value present when the window
    opens is no change. Samples whose value is NaN or 0 count as absent. Pass ``by=[]`` for the
    fleet as a whole (the first time each new value shows up anywhere).
    """
    if label not in frame.columns and not frame.empty:
        raise ValueError(f"no label {label!r} in this frame; its labels: {_label_columns(frame)}")
    if by is None:
        identity = [c for c in _label_columns(frame) if c not in (label, "__name__")]
    else:
        identity = [by] if isinstance(by, str) else list(by)
    columns = ["timestamp", *identity, "label", "from", "to"]
    present = frame[frame["value"].notna() & (frame["value"] != 0)] if not frame.empty else frame
    if present.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns}).astype(
            {"timestamp": "datetime64[ns, UTC]"}
        )
    tidy = present[[*identity, label]].fillna("").astype(str)
    tidy["timestamp"] = _utc_index(present["timestamp"])
    tidy["_series"] = tidy.groupby(identity, sort=False).ngroup() if identity else 0
    tidy = tidy.drop_duplicates(["_series", "timestamp", label])
    # Each sample's previous timestamp in its own series; a value "appears" if absent there.
    stamps = tidy[["_series", "timestamp"]].drop_duplicates().sort_values(["_series", "timestamp"])
    stamps["_previous"] = stamps.groupby("_series")["timestamp"].shift()
    tidy = tidy.merge(stamps, on=["_series", "timestamp"])
    earlier = tidy[["_series", "timestamp", label]].rename(columns={"timestamp": "_previous"})
    tidy = tidy.merge(
        earlier.assign(_was_there=True), on=["_series", "_previous", label], how="left"
    )
    opening = tidy["_previous"].isna()
    current = tidy[opening].sort_values(label).groupby("_series")[label].last().to_dict()
    appeared = tidy[~opening & tidy["_was_there"].isna()]
    rows = []
    for record in appeared.sort_values(["_series", "timestamp", label]).to_dict("records"):
        if record[label] != current[record["_series"]]:
            old, current[record["_series"]] = current[record["_series"]], record[label]
            ids = [record[name] for name in identity]
            rows.append((record["timestamp"], *ids, label, old, record[label]))
    table = pd.DataFrame(rows, columns=columns)
    table["timestamp"] = _utc_index(table["timestamp"])
    return table.sort_values(["timestamp", *identity], kind="stable").reset_index(drop=True)


def nearest_before(
    times: Iterable[TimeLike] | pd.DataFrame, t: TimeLike, *, within: pd.Timedelta | str
) -> pd.Timestamp | None:
    """The latest of ``times`` at or before ``t`` and no more than ``within`` earlier, or None.

    ``times`` may be timestamps or a frame with a ``timestamp`` column (such as :func:`changes`).
    """
    if isinstance(times, pd.DataFrame):
        times = times["timestamp"]
    moment, window = _utc(t), pd.Timedelta(within)
    candidates = [x for x in _utc_index(times) if moment - window <= x <= moment]
    return max(candidates) if candidates else None


# --- internals ------------------------------------------------------------------------------


def _label_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c not in _NOT_LABELS]


def _series_keys(frame: pd.DataFrame, names: list[str]) -> pd.Series:
    parts = [
        frame[name].astype(object).where(frame[name].notna(), "").astype(str) for name in names
    ]
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    joined = [
        ", ".join(f"{n}={v}" for n, v in zip(names, row, strict=True))
        for row in zip(*parts, strict=True)
    ]
    return pd.Series(joined, dtype=object)


def _floats(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)


def _utc(moment: TimeLike) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _utc_index(values: Iterable[TimeLike] | pd.Index | pd.Series) -> pd.DatetimeIndex:
    if not isinstance(values, (pd.Index, pd.Series, np.ndarray)):
        values = list(values)
    index = pd.DatetimeIndex(pd.to_datetime(values))
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").rename("timestamp")


def _empty_series() -> pd.Series:
    return pd.Series([], index=_utc_index([]), dtype=float, name="value")


def _clean(series: pd.Series, *, dropna: bool = True) -> pd.Series:
    """Float values on a sorted, unique UTC index; NaN dropped unless asked not to."""
    if not isinstance(series.index, pd.DatetimeIndex):
        if len(series):
            raise TypeError("expected a series indexed by timestamp; use series_of() or to_wide()")
        return _empty_series()
    clean = pd.Series(
        pd.to_numeric(series, errors="coerce").to_numpy(dtype=float),
        index=_utc_index(series.index),
        name=series.name,
    )
    clean = clean[~clean.index.duplicated(keep="last")].sort_index()
    return clean.dropna() if dropna else clean


def _span(
    series: pd.Series, *, since: TimeLike | None, tail: pd.Timedelta | str | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    end = series.index[-1] if len(series) else None
    if since is not None:
        return _utc(since), end
    if tail is not None and end is not None:
        return end - pd.Timedelta(tail), end
    return (series.index[0] if len(series) else None), end


def _between(series: pd.Series, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.Series:
    keep = np.ones(len(series), dtype=bool)
    if start is not None:
        keep &= series.index >= start
    if end is not None:
        keep &= series.index <= end
    return series[keep]


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
