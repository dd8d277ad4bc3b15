"""The shape every analysis reads: long frames of samples and series on a UTC index.

Small public helpers shared by :mod:`workbooks.notebook.analysis` (reshape, compare, label
changes) and :mod:`workbooks.notebook.onset` (when a change began, where it is heading).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

TimeLike = pd.Timestamp | datetime | str
Direction = Literal["up", "down"]

NOT_LABELS = ("timestamp", "value")


def label_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c not in NOT_LABELS]


def series_keys(frame: pd.DataFrame, names: list[str]) -> pd.Series:
    """Each row's series as text: ``"route=/v1/chat, code=500"`` (one label: its value alone)."""
    parts = [_text(frame[name]) for name in names]
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    # Joined a column at a time, as Python strings: a row at a time it read each value out
    # of Arrow's storage on its own (12,000 rows of 3 labels: 35 -> 4 ms).
    joined = f"{names[0]}=" + parts[0].to_numpy(dtype=object)
    for name, part in zip(names[1:], parts[1:], strict=True):
        joined = joined + f", {name}=" + part.to_numpy(dtype=object)
    return pd.Series(joined, dtype=object)


def _text(column: pd.Series) -> pd.Series:
    """A label column as text, a missing value as "". A string column stays in its own storage:
    going through Python objects cost 70 MB and a second for 700,000 points (benchmarks/week.py).
    """
    if isinstance(column.dtype, pd.StringDtype) or (
        column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) == "string"
    ):
        return column.fillna("").astype(str)
    return column.astype(object).where(column.notna(), "").astype(str)


def floats(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)


def utc(moment: TimeLike) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def utc_index(values: Iterable[TimeLike] | pd.Index | pd.Series) -> pd.DatetimeIndex:
    if not isinstance(values, (pd.Index, pd.Series, np.ndarray)):
        values = list(values)
    index = pd.DatetimeIndex(pd.to_datetime(values))
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").rename("timestamp")


def empty_series() -> pd.Series:
    return pd.Series([], index=utc_index([]), dtype=float, name="value")


def clean(series: pd.Series, *, dropna: bool = True) -> pd.Series:
    """Float values on a sorted, unique UTC index; NaN dropped unless asked not to."""
    if not isinstance(series.index, pd.DatetimeIndex):
        if len(series):
            raise TypeError("expected a series indexed by timestamp; use series_of() or to_wide()")
        return empty_series()
    clean = pd.Series(
        pd.to_numeric(series, errors="coerce").to_numpy(dtype=float),
        index=utc_index(series.index),
        name=series.name,
    )
    clean = clean[~clean.index.duplicated(keep="last")].sort_index()
    return clean.dropna() if dropna else clean


def span(
    series: pd.Series, *, since: TimeLike | None, tail: pd.Timedelta | str | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    end = series.index[-1] if len(series) else None
    if since is not None:
        return utc(since), end
    if tail is not None and end is not None:
        return end - pd.Timedelta(tail), end
    return (series.index[0] if len(series) else None), end


def between(series: pd.Series, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.Series:
    keep = np.ones(len(series), dtype=bool)
    if start is not None:
        keep &= series.index >= start
    if end is not None:
        keep &= series.index <= end
    return series[keep]
