"""The lines a time series chart draws, chosen from its data: pandas only, no matplotlib.

:func:`chart_lines` is done where the chart is asked for (a run's kernel) when its data is
large (:data:`workbooks.notebook.charts.CHOOSE_HERE_ROWS`), so what goes to the chart drawer
(:mod:`workbooks.notebook.drawing`) is the few lines drawn, not every series queried: a
7-day query over 1,000 series had its whole long frame, current and baseline, pickled to the
drawer and read there, and the run's peak memory was 620-640 MB PSS, against the 500 MB of
issue 12 (docs/performance.md, fourteenth pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .analysis import to_wide


@dataclass(frozen=True)
class Lines:
    """A chart's lines: ``lines`` and their baselines ``before`` as wide frames on a UTC index,
    at most ``max_series`` columns; ``total`` series were in the data; ``has_baseline`` if a
    baseline had any data (its legend entry is shown even when no line has its baseline)."""

    lines: pd.DataFrame
    before: pd.DataFrame
    total: int
    has_baseline: bool


def chart_lines(
    current: pd.DataFrame | pd.Series,
    baseline: pd.DataFrame | pd.Series | None,
    by: str | list[str] | None,
    max_series: int,
) -> Lines:
    """The ``max_series`` series with the highest last value (in name order when all fit),
    and the baselines of those; raises TypeError for data without timestamps."""
    by = _varying_labels(current) if by is None else by
    lines = _wide(current, by)
    if lines.empty or not lines.notna().to_numpy().any():
        return Lines(lines, pd.DataFrame(), 0, False)
    total = lines.shape[1]
    last = lines.ffill().iloc[-1].fillna(-math.inf)
    lines = lines[last.sort_values(ascending=False, kind="stable").index[:max_series]]
    lines = lines[sorted(lines.columns, key=str)] if total <= max_series else lines
    before = _wide(baseline, by) if baseline is not None else pd.DataFrame()
    if total == 1 and before.shape[1] == 1:  # one line each: pair them whatever their names
        before.columns = lines.columns
    drawn = before[[name for name in before.columns if name in lines.columns]]
    return Lines(lines, drawn, total, not before.empty)


def _is_long(data: pd.DataFrame | pd.Series | None) -> bool:
    return isinstance(data, pd.DataFrame) and {"timestamp", "value"} <= set(data.columns)


def _varying_labels(data: pd.DataFrame | pd.Series) -> list[str]:
    """The labels that tell a long frame's series apart."""
    if not _is_long(data):
        return []
    labels = [c for c in data.columns if c not in ("timestamp", "value")]
    return [c for c in labels if data[c].nunique(dropna=False) > 1]


def _wide(data: pd.DataFrame | pd.Series | None, by: str | list[str]) -> pd.DataFrame:
    """Any accepted input as a wide frame on a UTC index."""
    if data is None or len(data) == 0:
        return pd.DataFrame()
    if isinstance(data, pd.Series):
        wide = data.to_frame(name=str(data.name) if data.name is not None else "value")
    elif _is_long(data) and not by:  # one series: name it by its labels
        labels = [c for c in data.columns if c not in ("timestamp", "value")]
        name = ", ".join(f"{c}={data[c].iloc[0]}" for c in labels) or "value"
        wide = to_wide(data.assign(series=name), "series")
    elif _is_long(data):
        wide = to_wide(data, by)
    else:
        wide = data
    if not isinstance(wide.index, pd.DatetimeIndex):
        raise TypeError(
            "expected timestamps: a long frame, or a wide frame/series on a DatetimeIndex"
        )
    index = wide.index.tz_localize("UTC") if wide.index.tz is None else wide.index.tz_convert("UTC")
    return wide.set_axis(index, axis=0).sort_index().astype(float)
