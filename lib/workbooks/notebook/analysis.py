"""Pure analysis of query results: reshape, compare with a baseline, follow label changes.

Input is the long frame every source returns: a ``timestamp`` column (``datetime64[ns, UTC]``;
naive timestamps are read as UTC), one string column per Prometheus label and a float ``value``
column, one row per sample. A baseline frame is the same query over an earlier window, its
timestamps already shifted onto the current window so the two overlay.

Everything here is a pure function of its arguments: no I/O, no plotting, no global state.
Results are small frozen dataclasses (or frames) that findings and charts read. When a change
began and where it heads (onsets, trends) live in :mod:`workbooks.notebook.onset`, re-exported
here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from workbooks.notebook import frames
from workbooks.notebook.frames import Direction, TimeLike
from workbooks.notebook.onset import Onset, Trend, find_onset, time_to_limit, trend

__all__ = [
    "Comparison",
    "Direction",
    "Onset",
    "TimeLike",
    "Trend",
    "changes",
    "compare",
    "find_onset",
    "nearest_before",
    "series_of",
    "time_to_limit",
    "to_wide",
    "top_contributors",
    "trend",
]


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
        return pd.DataFrame(index=frames.utc_index([]), dtype=float)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(
            f"no label {missing} in this frame; its labels: {frames.label_columns(frame)}"
        )
    keys = frames.series_keys(frame, names)
    stamps = frames.utc_index(frame["timestamp"])
    if agg is None:
        return _pivot(stamps, keys, frames.floats(frame), names, frame)
    tidy = pd.DataFrame({"timestamp": stamps, "series": keys, "value": frames.floats(frame)})
    wide = tidy.groupby(["timestamp", "series"], sort=True)["value"].agg(agg)
    wide = wide.unstack("series")
    wide.columns = pd.Index([str(c) for c in wide.columns], name=", ".join(names))
    wide.index = frames.utc_index(wide.index)
    return wide


def _pivot(
    stamps: pd.DatetimeIndex,
    keys: pd.Series,
    values: np.ndarray,
    names: list[str],
    frame: pd.DataFrame,
) -> pd.DataFrame:
    """Each point straight into its (timestamp, series) cell: what a group-by and unstack give
    when no cell has two points, at less than half their memory and a tenth of their time
    (700,000 points: 88 -> 38 MB, 1.1 -> 0.1 s with the text keys of frames.series_keys)."""
    rows, times = pd.factorize(stamps, sort=True)
    columns, series = pd.factorize(keys, sort=True)
    cells = np.sort(rows * len(series) + columns)
    if (cells[1:] == cells[:-1]).any():
        others = [name for name in frames.label_columns(frame) if name not in names]
        raise ValueError(
            f"several series share each value of {names} (they differ in {others}): "
            "pass agg='sum', 'mean', 'max' or 'min', or aggregate in the query"
        )
    matrix = np.full((len(times), len(series)), np.nan)
    matrix[rows, columns] = values
    return pd.DataFrame(
        matrix,
        index=frames.utc_index(times),
        columns=pd.Index([str(name) for name in series], name=", ".join(names)),
    )


def series_of(frame: pd.DataFrame, /, **labels: str) -> pd.Series:
    """Values of one series indexed by timestamp: the one matching ``labels``, or the only one.

    An empty frame (a query with no data) or labels that match nothing give an empty series;
    labels that match several series raise :class:`ValueError` naming the labels that differ.
    """
    if frame.empty:
        return frames.empty_series()
    unknown = [name for name in labels if name not in frame.columns]
    if unknown:
        raise ValueError(
            f"no label {unknown} in this frame; its labels: {frames.label_columns(frame)}"
        )
    chosen = frame
    for name, wanted in labels.items():
        chosen = chosen[chosen[name].astype(str) == str(wanted)]
    label_columns = frames.label_columns(chosen)
    if label_columns and len(chosen[label_columns].drop_duplicates()) > 1:
        varying = [c for c in label_columns if chosen[c].nunique(dropna=False) > 1]
        raise ValueError(
            f"{labels or 'the frame'} matches several series; they differ in {varying}"
        )
    name = ", ".join(f"{key}={value}" for key, value in labels.items()) or "value"
    series = pd.Series(
        frames.floats(chosen), index=frames.utc_index(chosen["timestamp"]), name=name
    )
    return frames.clean(series, dropna=False)


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
    now = frames.clean(current)
    start, end = frames.span(now, since=since, tail=tail)
    now = frames.between(now, start, end)
    before = frames.between(frames.clean(baseline), start, end)
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
    names = list(now.columns) + [c for c in before.columns if c not in now.columns]
    now_medians, before_medians = _window_medians(now, before, names, since=since)
    usable = np.isfinite(now_medians) & np.isfinite(before_medians) & (before_medians != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(usable, now_medians / before_medians, np.nan)
    table = pd.DataFrame(
        {
            by: names or pd.Series([], dtype=object),  # no names: object, as before
            "current": now_medians,
            "baseline": before_medians,
            "ratio": ratios,
            "delta": now_medians - before_medians,
        }
    )
    table["_no_ratio"] = table["ratio"].isna()
    table = table.sort_values(by, kind="stable").sort_values(
        ["_no_ratio", "ratio", "current"],
        ascending=[True, direction == "down", False],
        na_position="last",
        kind="stable",
    )
    return table.drop(columns="_no_ratio").reset_index(drop=True)


def _window_medians(
    now: pd.DataFrame, before: pd.DataFrame, names: list[str], *, since: TimeLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per name, what :func:`compare` gives as ``current`` and ``baseline`` for the column of
    ``now`` and ``before`` (all NaN where missing), the frames of :func:`to_wide`: the medians
    over ``since`` (else the column's first point in ``now``) to its last point in ``now``.

    One pass over each frame's values instead of a :func:`compare` per column, which cleaned
    and sliced two series each time: the 50 rankings of the 15 demo runs, 0.54 -> 0.22 s (see
    docs/performance.md). Each median is ``np.median`` of the same values, as pandas takes it.
    """
    values = now.reindex(columns=names).to_numpy(dtype=float)
    stamps = now.index.asi8
    present = ~np.isnan(values)
    found = present.any(axis=0)
    lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    end = np.full(len(names), highest)
    start = np.full(len(names), lowest if since is None else frames.utc(since).as_unit("ns").value)
    if len(stamps):
        end = np.where(found, stamps[len(stamps) - 1 - present[::-1].argmax(axis=0)], highest)
        if since is None:
            start = np.where(found, stamps[present.argmax(axis=0)], lowest)

    def medians(table: np.ndarray, at: np.ndarray) -> np.ndarray:
        inside = (at[:, None] >= start) & (at[:, None] <= end) & ~np.isnan(table)
        return np.array(
            [
                np.median(table[inside[:, i], i]) if inside[:, i].any() else np.nan
                for i in range(len(names))
            ],
            dtype=float,
        )

    baseline = before.reindex(columns=names).to_numpy(dtype=float)
    return medians(values, stamps), medians(baseline, before.index.asi8)


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
        raise ValueError(
            f"no label {label!r} in this frame; its labels: {frames.label_columns(frame)}"
        )
    if by is None:
        identity = [c for c in frames.label_columns(frame) if c not in (label, "__name__")]
    else:
        identity = [by] if isinstance(by, str) else list(by)
    columns = ["timestamp", *identity, "label", "from", "to"]
    present = frame[frame["value"].notna() & (frame["value"] != 0)] if not frame.empty else frame
    if present.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns}).astype(
            {"timestamp": "datetime64[ns, UTC]"}
        )
    tidy = present[[*identity, label]].fillna("").astype(str)
    ids = [tidy[name].to_numpy(dtype=object) for name in identity]
    found = _appearances(
        _series_numbers(ids, len(tidy)),
        frames.utc_index(present["timestamp"]).asi8,
        tidy[label].to_numpy(dtype=object),
    )
    rows = [(stamp, *(i[row] for i in ids), label, old, new) for row, stamp, old, new in found]
    rows.sort(key=lambda row: row[: 1 + len(identity)])  # by time, then labels; stable
    table = pd.DataFrame(rows, columns=columns)
    table["timestamp"] = frames.utc_index(pd.to_datetime(table["timestamp"], unit="ns", utc=True))
    return table


def _series_numbers(labels: list[np.ndarray], rows: int) -> np.ndarray:
    """Each row's series as a number: the same for the same values of every label given."""
    numbers = np.zeros(rows, dtype=np.int64)
    for values in labels:
        codes, uniques = pd.factorize(values)
        numbers, _ = pd.factorize(numbers * len(uniques) + codes)  # stays below the row count
    return numbers


def _appearances(
    series: np.ndarray, stamps: np.ndarray, values: np.ndarray
) -> list[tuple[int, int, str, str]]:
    """The transitions :func:`changes` lists, as (row, timestamp in ns, from, to).

    Arrays, not merges: each row is looked up at its series' previous timestamp by position
    in the rows sorted by series, time and value (a demo runbook's model_info, 1,250 rows:
    ``changes`` 17 -> 4 ms a call; docs/performance.md, sixteenth pass).
    """
    codes, names = pd.factorize(values, sort=True)  # a code's order is its value's order
    order = np.lexsort((codes, stamps, series))
    series, stamps, codes = series[order], stamps[order], codes[order]
    new_series = np.r_[True, series[1:] != series[:-1]]
    new_stamp = new_series | np.r_[True, stamps[1:] != stamps[:-1]]
    unique = new_stamp | np.r_[True, codes[1:] != codes[:-1]]  # one row per (series, time, value)
    order, series, stamps, codes = order[unique], series[unique], stamps[unique], codes[unique]
    new_series, new_stamp = new_series[unique], new_stamp[unique]
    moment = np.cumsum(new_stamp) - 1  # the number of each (series, timestamp), in order
    opening = moment == np.maximum.accumulate(np.where(new_series, moment, 0))
    key = moment * len(names) + codes  # increasing: rows are sorted and unique
    before = (moment - 1) * len(names) + codes  # the same value at the series' previous time
    at = np.minimum(np.searchsorted(key, before), len(key) - 1)
    appeared = ~opening & (key[at] != before)
    # The value present when the window opens (the greatest, if several) is no change.
    current = dict(zip(series[opening].tolist(), codes[opening].tolist(), strict=True))
    found = []
    for row, one, stamp, now in zip(
        *(column[appeared].tolist() for column in (order, series, stamps, codes)), strict=True
    ):
        if now != current[one]:
            found.append((row, stamp, str(names[current[one]]), str(names[now])))
            current[one] = now
    return found


def nearest_before(
    times: Iterable[TimeLike] | pd.DataFrame, t: TimeLike, *, within: pd.Timedelta | str
) -> pd.Timestamp | None:
    """The latest of ``times`` at or before ``t`` and no more than ``within`` earlier, or None.

    ``times`` may be timestamps or a frame with a ``timestamp`` column (such as :func:`changes`).
    """
    if isinstance(times, pd.DataFrame):
        times = times["timestamp"]
    moment, window = frames.utc(t), pd.Timedelta(within)
    candidates = [x for x in frames.utc_index(times) if moment - window <= x <= moment]
    return max(candidates) if candidates else None
