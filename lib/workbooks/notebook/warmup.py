"""A service's kernel uses the workbook machinery once on made-up data, before any alert.

``workbook serve`` starts its kernels ahead of need (:mod:`workbooks.running.warm`). Imports
are not all that a kernel's first run paid for the first time: the first chart of each kind
loads its fonts, makes its Agg renderer and measures its tick labels; the first evidence
written and read loads pyarrow's parquet code; pandas' first group-by, pivot and median of a
kind set up their machinery. :func:`warm_up` pays for these while the kernel waits for an
alert: a chart of each kind drawn and thrown away, evidence written to a temporary folder and
read back, Prometheus's answer format decoded, the analysis functions run, all on made-up
numbers. What stays is what imports leave: modules and caches (fonts, text sizes, a renderer
per chart size), which the kernel's chart drawer, forked after this, shares
(:mod:`workbooks.notebook.drawing`). No name in the notebook, no figure, no file, no
configuration read: the config is read by the run, as it is then. Measured in
docs/performance.md (ninth and tenth passes).

Best effort: a warm-up that fails is written to the kernel's log, and the kernel is used as
it is, as good as one that never warmed up.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from workbooks.notebook import analysis, charts
from workbooks.notebook.prometheus import frame_from_matrix
from workbooks.notebook.sources import EvidenceSource, EvidenceWriter, Window

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Draw, save, replay and analyse made-up metrics once; never raises."""
    try:
        _exercise()
    except Exception:  # the run will pay for what was not warmed up; nothing else is lost
        log.warning("the kernel's warm-up failed; its first run may be slower", exc_info=True)


def _exercise() -> None:
    stamps = pd.date_range("2000-01-01", periods=120, freq="30s", tz="UTC")
    answer = [
        {
            "metric": {"__name__": "warm_up", "route": route, "version": version},
            "values": [
                [stamp.timestamp(), str(level * (1 + n / 120))] for n, stamp in enumerate(stamps)
            ],
        }
        for route, version, level in (("a", "1", 1.0), ("b", "1", 2.0), ("c", "2", 4.0))
    ]
    current = frame_from_matrix(answer)
    baseline = current.assign(value=current["value"] * 0.5)
    window = Window(stamps[0].to_pydatetime(), stamps[-1].to_pydatetime())
    with tempfile.TemporaryDirectory(prefix="workbooks-warm-up-") as folder:
        writer = EvidenceWriter(Path(folder), window=window, source="warm-up")
        writer.save(
            name="warm_up",
            role="current",
            query="warm_up",
            window=window,
            step_seconds=30,
            frame=current,
        )
        current = EvidenceSource(Path(folder)).range_query("warm_up", "warm_up", window, 30)
    since = stamps[60]
    ranking = analysis.top_contributors(current, baseline, by="route", since=since)
    series = analysis.series_of(current, route="c")
    analysis.compare(series, analysis.series_of(baseline, route="c"), since=since)
    onset = analysis.find_onset(series)
    markers = analysis.changes(current, label="version", by=[])
    charts.to_png(
        charts.timeseries(
            current,
            baseline=baseline,
            by="route",
            title="warm-up",
            subtitle="warm-up",
            unit="seconds",
            alert_start=stamps[90],
            onset=onset,
            limit=5.0,
            markers=markers,
        )
    )
    charts.to_png(charts.ranked_bars(ranking, label="route", title="warm-up", highlight="c"))
    spread = pd.DataFrame({"route": ["a", "b", "c"], "ratio": np.array([0.5, 2.0, 40.0])})
    charts.to_png(charts.ranked_bars(spread, label="route", title="warm-up"))  # a log axis
