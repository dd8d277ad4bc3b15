"""What a query gives a workbook: its window's result and its baseline's, on one time axis."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from workbooks.notebook import analysis
from workbooks.notebook.sources import Window, empty_frame


@dataclass
class QueryResult:
    """One catalog query over the incident window, and the same window ``baseline`` earlier.

    ``baseline`` timestamps are already shifted onto the current window, so they overlay.
    """

    name: str
    title: str
    query: str
    unit: str | None
    window: Window
    step_seconds: int
    current: pd.DataFrame = field(default_factory=empty_frame)
    baseline: pd.DataFrame | None = None
    error: str | None = None

    @property
    def empty(self) -> bool:
        return self.current.empty

    def series(self) -> tuple[pd.Series, pd.Series]:
        """The current and baseline values of a single-series result (empty when absent)."""
        baseline = self.baseline if self.baseline is not None else empty_frame()
        return analysis.series_of(self.current), analysis.series_of(baseline)

    def compare(
        self, *, since: pd.Timestamp | None = None, tail: pd.Timedelta | None = None
    ) -> analysis.Comparison:
        """A single-series result against its baseline (medians over the same span)."""
        current, baseline = self.series()
        return analysis.compare(current, baseline, since=since, tail=tail)


def shifted(frame: pd.DataFrame, offset: timedelta) -> pd.DataFrame:
    """A baseline's frame moved forward by ``offset``, onto the window it is compared with."""
    moved = frame.copy()
    if len(moved):
        moved["timestamp"] = moved["timestamp"] + pd.Timedelta(offset)
    return moved
