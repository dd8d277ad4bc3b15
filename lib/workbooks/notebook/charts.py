"""Charts a workbook shows: a metric against its baseline, a ranking, a "no data" placeholder.

Each function returns a :class:`Chart`: what to draw (the data, the title, the marks), not yet a
figure. Its matplotlib figure is made where the chart is drawn (:mod:`workbooks.notebook.figures`,
by the function of the same name): in a run, by the chart drawer on the spare core
(:mod:`workbooks.notebook.drawing`), so a run's kernel never imports matplotlib, nor spends its
time on Axes and lines (docs/performance.md, the thirteenth pass). Anywhere else, IPython shows
a chart as PNG when it is a cell's value, and :attr:`Chart.figure` is the figure, made once,
for whoever wants to change it before it is shown.

Arguments are checked here, when the chart is asked for; the data are checked when it is drawn,
and a chart that cannot be drawn says why in its place. A time series chart chooses its lines
here when its data is large (:mod:`workbooks.notebook.lines`), so only those are sent to be
drawn.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .analysis import Onset, TimeLike

__all__ = ["Chart", "no_data", "ranked_bars", "timeseries", "to_png"]

FIGURES = "workbooks.notebook.figures"
# Data of more rows than this (current and baseline) has its lines chosen where the chart is
# asked for, so a large query is not sent whole to the drawer (a 7-day run over 1,000 series:
# peak 620-640 -> 420-430 MB PSS); smaller data is sent as it is: choosing costs a run's
# kernel 6-37 ms a chart on the demo runs, on the cells' path (docs/performance.md).
CHOOSE_HERE_ROWS = 20_000


class Chart:
    """A chart to draw: ``make(*args, **options)`` gives its figure, where it is drawn.

    ``make`` is a function of :mod:`workbooks.notebook.figures` by name, or any function that
    returns a matplotlib figure (a runbook's own kind of chart, made with
    :func:`workbooks.notebook.figures.new_figure`); to be drawn beside a run it must be a
    module's function, which pickle sends by name. The figure is made at most once.
    """

    def __init__(self, make: str | Callable[..., Figure], /, *args: Any, **options: Any) -> None:
        self.make, self.args, self.options = make, args, options
        self._figure: Figure | None = None

    @property
    def figure(self) -> Figure:
        """The matplotlib figure, made now if it was not yet."""
        if self._figure is None:
            make = self.make
            if isinstance(make, str):
                make = getattr(importlib.import_module(FIGURES), make)
            self._figure = make(*self.args, **self.options)
        return self._figure

    @property
    def title(self) -> str:
        """The chart's title (its first line), as the notebook's text shows it."""
        title = self.options.get("title") or next((a for a in self.args if isinstance(a, str)), "")
        return str(title).split("\n", 1)[0]

    def _repr_png_(self) -> bytes:
        return to_png(self)

    def __repr__(self) -> str:
        return f"<chart: {self.title}>" if self.title else "<chart>"


def timeseries(
    current: pd.DataFrame | pd.Series,
    *,
    baseline: pd.DataFrame | pd.Series | None = None,
    by: str | list[str] | None = None,
    title: str,
    unit: str | None = None,
    alert_start: TimeLike | None = None,
    onset: TimeLike | Onset | None = None,
    limit: float | None = None,
    limit_label: str = "limit",
    markers: pd.DataFrame | None = None,
    subtitle: str | None = None,
    max_series: int = 8,
    baseline_label: str = "baseline",
) -> Chart:
    """One line per series (label ``by``), its baseline dashed in the same colour, and context.

    ``current``/``baseline`` are long frames (as sources return), wide frames (one column per
    series) or one series. Vertical lines mark the alert start and the found onset, a horizontal
    one the ``limit``; ``markers`` is :func:`workbooks.notebook.analysis.changes` output ("2.4.0 on
    api-1").
    Lines outside the plotted window are left out. Values are scaled to ``unit`` ("seconds" to
    ms or s, "bytes" to GiB/MiB, "ratio" to %). Beyond ``max_series`` series, the ones with the
    highest last value are kept and the legend says so.
    """
    chosen: Any = current
    if len(current) + (0 if baseline is None else len(baseline)) > CHOOSE_HERE_ROWS:
        from .lines import chart_lines

        # Only the lines chosen go where the chart is drawn. Data they cannot be chosen from go
        # as given: where the chart is drawn, it says what is wrong with them.
        with contextlib.suppress(Exception):
            chosen, baseline, by = chart_lines(current, baseline, by, max_series), None, None
    return Chart(
        "timeseries",
        chosen,
        baseline=baseline,
        by=by,
        title=title,
        unit=unit,
        alert_start=alert_start,
        onset=onset,
        limit=limit,
        limit_label=limit_label,
        markers=markers,
        subtitle=subtitle,
        max_series=max_series,
        baseline_label=baseline_label,
    )


def ranked_bars(
    table: pd.DataFrame,
    *,
    label: str,
    value: str = "ratio",
    title: str,
    unit: str | None = "x",
    highlight: str | None = None,
    subtitle: str | None = None,
    max_bars: int = 12,
) -> Chart:
    """Horizontal bars, first row on top, for a table such as ``top_contributors`` output.

    Ratios are drawn from 1.0 (the line where a value equals its own baseline), on a log scale
    when they span more than tenfold; ``highlight`` (a value of ``label``) is drawn in red. A row
    without a value (new label value, no baseline) is listed with "no baseline".
    """
    return Chart(
        "ranked_bars",
        table,
        label=label,
        value=value,
        title=title,
        unit=unit,
        highlight=highlight,
        subtitle=subtitle,
        max_bars=max_bars,
    )


def no_data(title: str, message: str) -> Chart:
    """A small placeholder that says plainly that a query returned nothing."""
    return Chart("no_data", title, message)


def to_png(chart: Chart | Figure) -> bytes:
    """A chart (or any matplotlib figure) as PNG bytes: :func:`workbooks.notebook.png.to_png`."""
    from .png import to_png as draw

    return draw(chart.figure if isinstance(chart, Chart) else chart)
