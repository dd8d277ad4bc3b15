"""How a workbook's charts are drawn: matplotlib figures for :mod:`workbooks.notebook.charts`.

A function here makes the figure that a :class:`~workbooks.notebook.charts.Chart` of the same
name describes: a metric against its baseline, a ranking, a "no data" placeholder. Figures never
touch pyplot: no backend is selected here, nothing is forced to Agg (an inline or widget backend
chosen by the notebook stays as it is), the inline backend does not show a chart twice, and a
long-lived worker does not accumulate open figures. PNG is rendered by
:mod:`workbooks.notebook.png` on an Agg canvas.

This module and matplotlib load where a chart is drawn: in a run, the chart drawer beside the
kernel (:mod:`workbooks.notebook.drawing`); the kernel itself only describes its charts.
"""

from __future__ import annotations

import math
import textwrap
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .analysis import Onset, TimeLike
from .lines import Lines, chart_lines
from .png import ChartFigure, TightOnce

__all__ = ["new_figure", "no_data", "ranked_bars", "timeseries"]

WIDTH_IN, HEIGHT_IN, DPI = 9.0, 3.5, 100
ALERT_COLOUR, ONSET_COLOUR, LIMIT_COLOUR, MARKER_COLOUR = "#d62728", "0.1", "#7f0000", "0.45"
# tab10 without its red, which belongs to the alert line
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
SERIES_COLOURS += ("#bcbd22", "#17becf")
HIGHLIGHT_COLOUR, BAR_COLOUR = "#d62728", "#9aaec8"
_GIB, _MIB, _KIB = 2**30, 2**20, 2**10


def timeseries(
    current: Lines | pd.DataFrame | pd.Series,
    *,
    baseline: pd.DataFrame | pd.Series | None,
    by: str | list[str] | None,
    title: str,
    unit: str | None,
    alert_start: TimeLike | None,
    onset: TimeLike | Onset | None,
    limit: float | None,
    limit_label: str,
    markers: pd.DataFrame | None,
    subtitle: str | None,
    max_series: int,
    baseline_label: str,
) -> Figure:
    """The figure of :func:`workbooks.notebook.charts.timeseries`, which gives every argument:
    ``current`` as the lines it chose, or as the data if they could not be chosen there."""
    chosen = (
        current if isinstance(current, Lines) else chart_lines(current, baseline, by, max_series)
    )
    lines, before, total = chosen.lines, chosen.before, chosen.total
    if lines.empty or not lines.notna().to_numpy().any():
        return no_data(title, f"no data for {title} in this window")

    biggest = float(np.nanmax(np.abs(lines.to_numpy(dtype=float))))
    factor, unit_label = _scale(unit, biggest)
    figure = new_figure()
    ax = figure.add_subplot()
    handles: list[Line2D] = []
    for position, name in enumerate(lines.columns):
        colour = SERIES_COLOURS[position % len(SERIES_COLOURS)]
        (line,) = ax.plot(
            _x(lines.index), lines[name] * factor, color=colour, lw=1.4, label=_short(str(name))
        )
        handles.append(line)
        if name in before.columns:
            ax.plot(
                _x(before.index),
                before[name] * factor,
                color=colour,
                lw=1.1,
                ls="--",
                alpha=0.45,
                label=f"{_short(str(name))} ({baseline_label})",
            )
    if chosen.has_baseline:
        handles.append(
            Line2D([], [], color="0.4", ls="--", alpha=0.6, label=f"{baseline_label} (dashed)")
        )

    margin = (lines.index[-1] - lines.index[0]) * 0.02
    window = (lines.index[0] - margin, lines.index[-1] + margin)  # lines outside it are left out
    if alert_start is not None and _inside(alert := _utc(alert_start), window):
        label = f"alert fired {alert:%H:%M} UTC"
        handles.append(ax.axvline(_x1(alert), color=ALERT_COLOUR, lw=1.5, label=label))
    if onset is not None:
        found = _utc(onset.at if isinstance(onset, Onset) else onset)
        if _inside(found, window):
            label = f"onset {found:%H:%M} UTC"
            handles.append(ax.axvline(_x1(found), color=ONSET_COLOUR, lw=1.5, ls=":", label=label))
    if limit is not None:
        label = f"{limit_label} ({_format(limit * factor, unit_label)})"
        handles.append(ax.axhline(limit * factor, color=LIMIT_COLOUR, lw=1.2, ls="-.", label=label))
    if markers is not None and not markers.empty:
        _draw_markers(ax, markers, window)

    _time_axis(ax)
    ax.set_ylabel(unit_label)
    ax.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))
    ax.grid(True, alpha=0.25)
    note = f"top {max_series} of {total} by last value" if total > max_series else None
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7.5,
        title=note,
        title_fontsize=7.5,
        frameon=False,
    )
    _titles(ax, title, subtitle)
    return figure


def ranked_bars(
    table: pd.DataFrame,
    *,
    label: str,
    value: str,
    title: str,
    unit: str | None,
    highlight: str | None,
    subtitle: str | None,
    max_bars: int,
) -> Figure:
    """The figure of :func:`workbooks.notebook.charts.ranked_bars`, which gives every argument."""
    rows = table.head(max_bars)
    if rows.empty:
        return no_data(title, f"no data for {title}: nothing to rank")
    names = [_short(str(name)) for name in rows[label]]
    values = pd.to_numeric(rows[value], errors="coerce").to_numpy(dtype=float)
    is_ratio = value == "ratio"
    reference = 1.0 if is_ratio else 0.0
    height = min(5.0, max(2.4, 1.2 + 0.3 * len(rows)))
    figure = new_figure(height=height)
    ax = figure.add_subplot()
    positions = np.arange(len(rows))
    colours = [
        HIGHLIGHT_COLOUR if highlight is not None and str(name) == str(highlight) else BAR_COLOUR
        for name in rows[label]
    ]
    widths = np.where(np.isnan(values), 0.0, values - reference)
    ax.barh(positions, widths, left=reference, color=colours, height=0.6)
    finite = values[np.isfinite(values)]
    if is_ratio and len(finite) and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_Times())
        ax.xaxis.set_minor_formatter(_Times())
    if is_ratio:
        ax.axvline(1.0, color="0.2", lw=1.0, label="baseline (1.0x)")
    for position, number in zip(positions, values, strict=True):
        text = "no baseline" if math.isnan(number) else _format(number, unit)
        ax.annotate(
            text,
            xy=(reference if math.isnan(number) else number, position),
            xytext=(4 if math.isnan(number) or number >= reference else -4, 0),
            textcoords="offset points",
            ha="left" if math.isnan(number) or number >= reference else "right",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(positions, names, fontsize=8)
    ax.invert_yaxis()  # most changed on top
    ax.margins(x=0.15)
    ax.set_xlabel("current / own baseline (median)" if is_ratio else f"{value} ({unit or ''})")
    ax.grid(True, axis="x", alpha=0.25)
    _titles(ax, title, subtitle)
    return figure


def no_data(title: str, message: str) -> Figure:
    """The figure of :func:`workbooks.notebook.charts.no_data`."""
    figure = new_figure(height=1.6)
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        textwrap.fill(message, 100),
        ha="center",
        va="center",
        fontsize=11,
        color="0.25",
        bbox={"boxstyle": "round,pad=0.6", "facecolor": "#f4f4f4", "edgecolor": "0.7", "ls": "--"},
        transform=ax.transAxes,
    )
    _titles(ax, title, None)
    return figure


# --- internals ------------------------------------------------------------------------------


def new_figure(
    *, width: float = WIDTH_IN, height: float = HEIGHT_IN, **options: Any
) -> ChartFigure:
    """An empty chart of this module's size and layout, for a runbook's own kind of chart."""
    options.setdefault("layout", TightOnce())
    return ChartFigure(figsize=(width, height), dpi=DPI, **options)


def _titles(ax: Axes, title: str, subtitle: str | None) -> None:
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold", pad=16 if subtitle else 6)
    if subtitle:
        ax.text(0, 1.02, _short(subtitle, 150), transform=ax.transAxes, fontsize=8.5, color="0.35")


class _Times(ticker.LogFormatter):
    """A log axis of ratios labelled as plain multiples ("0.5x", "10x"), on the ticks matplotlib
    labels: a ratio reads better as "10x" than as matplotlib's default 10^1, which is mathtext
    (a parser built in every kernel that draws one)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}x" if super().__call__(x, pos) else ""


def _utc(moment: TimeLike) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _x(index: pd.DatetimeIndex) -> np.ndarray:
    """Naive UTC datetime64 values: matplotlib reads them as UTC, with no pandas converter."""
    return index.tz_convert("UTC").tz_localize(None).to_numpy()


def _x1(moment: pd.Timestamp) -> float:
    return float(mdates.date2num(moment.tz_convert("UTC").tz_localize(None).to_datetime64()))


def _time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("time (UTC)")


def _inside(moment: pd.Timestamp, window: tuple[pd.Timestamp, pd.Timestamp]) -> bool:
    return window[0] <= moment <= window[1]


def _draw_markers(
    ax: Axes, markers: pd.DataFrame, window: tuple[pd.Timestamp, pd.Timestamp], most: int = 6
) -> None:
    """Deploy markers; past ``most`` rows, one marker per new value at its first appearance."""
    identity = [c for c in markers.columns if c not in ("timestamp", "label", "from", "to")]
    rows = markers.sort_values("timestamp", kind="stable")
    if len(rows) > most:
        counts = rows.groupby("to", sort=False).size()
        rows = rows.drop_duplicates("to")
        texts = [f"{to} on {counts[to]} series" for to in rows["to"]]
    else:
        texts = [
            f"{row['to']} on {'/'.join(str(row[c]) for c in identity)}"
            if identity
            else str(row["to"])
            for _, row in rows.iterrows()
        ]
    for (_, row), text in zip(rows.iterrows(), texts, strict=True):
        moment = _utc(row["timestamp"])
        if not _inside(moment, window):
            continue
        x = _x1(moment)
        ax.axvline(x, color=MARKER_COLOUR, lw=0.9, ls=(0, (4, 2)), label=text)
        ax.annotate(
            text,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -3),
            textcoords="offset points",
            rotation=90,
            ha="left",
            va="top",
            fontsize=7,
            color=MARKER_COLOUR,
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.7, "lw": 0},
        )


def _scale(unit: str | None, biggest: float) -> tuple[float, str]:
    """Factor to multiply values by, and the axis unit after it."""
    if unit == "seconds":
        return (1000.0, "ms") if biggest < 1 else (1.0, "s")
    if unit == "bytes":
        for size, name in ((_GIB, "GiB"), (_MIB, "MiB"), (_KIB, "KiB")):
            if biggest >= size:
                return 1.0 / size, name
        return 1.0, "B"
    if unit == "ratio":
        return 100.0, "%"
    if unit == "percent":
        return 1.0, "%"
    return 1.0, unit or ""


def _format(number: float, unit: str | None) -> str:
    text = f"{number:.3g}" if abs(number) < 1000 else f"{number:,.0f}"
    if unit == "x":
        return f"{text}x"
    return f"{text} {unit}".strip() if unit and unit != "%" else f"{text}{unit or ''}"


def _short(text: str, most: int = 40) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
