"""What one chart costs: ``charts.to_png`` against matplotlib's Agg draw of the same figure.

The floor is ``FigureCanvasAgg.draw()`` alone: the rendering a PNG cannot do without. On top
of it ``to_png`` lays the chart out (one measuring pass, :class:`~workbooks.notebook.png.
TightOnce`) and stores it with a 256-colour palette. ``savefig`` with matplotlib's own tight
layout and PNG writer (the way before issue 12) is printed beside it. Median of ``--runs`` per
chart kind, in ms.

    .venv/bin/python benchmarks/charts.py --runs 20
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workbooks.notebook import charts

MINUTES = pd.date_range("2026-11-20T12:00Z", periods=140, freq="1min")


def _timeseries() -> Figure:
    rng = np.random.default_rng(0)
    frames = [
        pd.DataFrame({"timestamp": MINUTES, "value": rng.random(140) + n, "route": f"/v1/r{n}"})
        for n in range(6)
    ]
    current = pd.concat(frames)
    return charts.timeseries(
        current,
        baseline=current.assign(value=current["value"] * 0.9),
        by="route",
        title="p99 latency by route",
        unit="s",
        alert_start=MINUTES[100],
        onset=MINUTES[90],
        subtitle="the slowest route against its own baseline",
    ).figure


def _ranked() -> Figure:
    table = pd.DataFrame(
        {"route": [f"/v1/route/{n}" for n in range(6)], "ratio": [4.5, 1.3, 1.1, 1.0, 0.9, 0.8]}
    )
    return charts.ranked_bars(
        table, label="route", title="Which route", highlight="/v1/route/0"
    ).figure


def _no_data() -> Figure:
    return charts.no_data(
        "Queue depth", "no data for queue_depth: sum(inference_queue_depth)"
    ).figure


KINDS: dict[str, Callable[[], Figure]] = {
    "timeseries (6 series + baselines)": _timeseries,
    "ranked bars (6 rows)": _ranked,
    "no-data placeholder": _no_data,
}


def _agg_draw(figure: Figure) -> None:
    figure.set_layout_engine(None)
    FigureCanvasAgg(figure).draw()


def _savefig(figure: Figure) -> None:
    figure.set_layout_engine("tight")  # matplotlib's own: how charts were rendered before
    figure.savefig(io.BytesIO(), format="png", dpi=figure.dpi)


def _median_ms(make: Callable[[], Figure], render: Callable[[Figure], object], runs: int) -> float:
    render(make())  # warm-up: fonts, caches
    samples = []
    for _ in range(runs):
        figure = make()
        started = time.perf_counter()
        render(figure)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def bench_charts(runs: int) -> list[dict[str, float | str]]:
    rows: list[dict[str, float | str]] = []
    for kind, make in KINDS.items():
        floor = _median_ms(make, _agg_draw, runs)
        ours = _median_ms(make, charts.to_png, runs)
        rows.append(
            {
                "kind": kind,
                "floor_ms": floor,
                "to_png_ms": ours,
                "savefig_ms": _median_ms(make, _savefig, runs),
                "png_kb": len(charts.to_png(make())) / 1000,
            }
        )
    return rows


def describe(rows: list[dict[str, float | str]]) -> list[str]:
    return [
        f"chart {row['kind']}: to_png {row['to_png_ms']:.0f} ms = "
        f"{float(row['to_png_ms']) / float(row['floor_ms']):.2f}x the Agg draw alone "
        f"({row['floor_ms']:.0f} ms; tight layout + savefig {row['savefig_ms']:.0f} ms), "
        f"{row['png_kb']:.0f} kB"
        for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    print("\n".join(describe(bench_charts(args.runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
