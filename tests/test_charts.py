"""Charts render headless to modest PNGs and carry the context a reader looks for."""

from __future__ import annotations

import contextlib
import io
import pickle
import struct
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib import ticker
from matplotlib.figure import Figure
from nbclient import NotebookClient

from workbooks.notebook import png as png_module
from workbooks.notebook.analysis import changes, find_onset, series_of, top_contributors
from workbooks.notebook.charts import Chart, no_data, ranked_bars, timeseries, to_png
from workbooks.notebook.png import ChartFigure, TightOnce

GiB = 2**30
MINUTES = pd.date_range("2026-11-02T08:00:00Z", periods=120, freq="min")
ALERT = MINUTES[75]  # 09:15 UTC


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")  # charts never use pyplot; this guards against a regression that would


def long_frame(columns: dict[str, np.ndarray], label: str = "route") -> pd.DataFrame:
    parts = [pd.DataFrame({"timestamp": MINUTES, label: k, "value": v}) for k, v in columns.items()]
    return pd.concat(parts, ignore_index=True)


def latency_incident() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    current = {
        "/v1/chat": 0.2 + rng.normal(0, 0.01, 120),
        "/v1/vision": np.r_[np.full(70, 0.3), np.full(50, 0.9)] + rng.normal(0, 0.02, 120),
        "/v1/audio": 0.15 + rng.normal(0, 0.01, 120),
    }
    baseline = {route: 0.2 + rng.normal(0, 0.01, 120) for route in current}
    return long_frame(current), long_frame(baseline)


def rollout() -> pd.DataFrame:
    rows = [
        (when, instance, "2.4.0" if minute >= switch else "2.3.1", 1.0)
        for minute, when in enumerate(MINUTES)
        for instance, switch in (("api-1", 66), ("api-2", 69), ("api-3", 999))
    ]
    return pd.DataFrame(rows, columns=["timestamp", "instance", "model_version", "value"])


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def line_labels(figure: Figure) -> list[str]:
    return [line.get_label() for line in figure.axes[0].get_lines()]


def legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_timeseries_shows_series_baseline_alert_onset_limit_and_deploys():
    current, baseline = latency_incident()
    onset = find_onset(series_of(current, route="/v1/vision"))
    figure = timeseries(
        current,
        baseline=baseline,
        by="route",
        title="p99 latency by route",
        subtitle="HighLatency service=inference-api severity=warning",
        unit="seconds",
        alert_start=ALERT,
        onset=onset,
        limit=1.0,
        limit_label="SLO",
        markers=changes(rollout(), label="model_version"),
    ).figure
    labels = line_labels(figure)
    assert "alert fired 09:15 UTC" in labels
    assert "onset 09:10 UTC" in labels
    assert "SLO (1,000 ms)" in labels
    assert "2.4.0 on api-1" in labels and "2.4.0 on api-2" in labels
    assert "/v1/vision (baseline)" in labels
    assert {"/v1/chat", "/v1/vision", "/v1/audio", "baseline (dashed)"} <= set(legend_texts(figure))
    ax = figure.axes[0]
    assert ax.get_ylabel() == "ms" and "UTC" in ax.get_xlabel()
    assert ax.get_title(loc="left") == "p99 latency by route"
    png = to_png(figure)
    assert png_size(png) == (900, 350)
    assert len(png) < 120_000


def test_timeseries_keeps_the_top_series_by_last_value_and_says_so():
    rng = np.random.default_rng(3)
    memory = {
        f"api-{i:02d}": (2 + 0.3 * i) * GiB + rng.normal(0, 0.01 * GiB, 120) for i in range(12)
    }
    figure = timeseries(
        long_frame(memory, "instance"),
        title="RSS by instance",
        unit="bytes",
        limit=16 * GiB,
        limit_label="container limit",
        max_series=8,
    ).figure
    legend = figure.axes[0].get_legend()
    assert legend.get_title().get_text() == "top 8 of 12 by last value"
    assert legend_texts(figure)[0] == "api-11"  # highest last value first
    assert "api-00" not in legend_texts(figure)
    assert "container limit (16 GiB)" in line_labels(figure)
    assert figure.axes[0].get_ylabel() == "GiB"
    assert len(to_png(figure)) < 120_000


def test_a_chart_of_many_series_carries_only_the_lines_it_draws():
    """What goes to the chart drawer is the chosen lines and their baselines, not every series
    queried (a 7-day run over 1,000 series had its peak memory at 620-640 MB for it); the PNG
    is the same as drawn from the whole data."""
    rng = np.random.default_rng(5)
    instances = {
        f"api-{i:03d}": (1 + 0.01 * i) * GiB + rng.normal(0, GiB / 10_000, 120) for i in range(300)
    }
    current, baseline = long_frame(instances, "instance"), long_frame(instances, "instance")
    options = {"title": "RSS by instance", "unit": "bytes", "alert_start": ALERT}
    chart = timeseries(current, baseline=baseline, **options)
    chosen = chart.args[0]
    assert chosen.total == 300 and chosen.lines.shape[1] == chosen.before.shape[1] == 8
    assert len(pickle.dumps(chart)) < len(pickle.dumps((current, baseline))) / 20
    whole = Chart("timeseries", current, baseline=baseline, by=None, **chart_defaults(options))
    assert to_png(chart) == to_png(whole)
    assert legend_texts(chart.figure)[0] == "api-299"  # highest last value first


def chart_defaults(options: dict) -> dict:
    """Every other argument of charts.timeseries, at its default, beside ``options``."""
    defaults = {"limit": None, "limit_label": "limit", "markers": None, "subtitle": None}
    defaults |= {"onset": None, "max_series": 8, "baseline_label": "baseline"}
    return defaults | options


def test_many_noisy_series_still_make_a_modest_png():
    rng = np.random.default_rng(0)
    noisy = long_frame({f"/v1/route-{i}": rng.random(120) for i in range(10)})
    png = to_png(timeseries(noisy, title="requests by route", unit="req/s", alert_start=ALERT))
    assert png_size(png) == (900, 350)
    assert len(png) < 120_000  # stored with a palette


def test_timeseries_of_one_series_with_a_naive_alert_time():
    error_ratio = pd.Series(np.r_[np.full(60, 0.001), np.full(60, 0.05)], index=MINUTES, name="5xx")
    figure = timeseries(
        error_ratio,
        baseline=error_ratio * 0 + 0.001,
        title="error ratio",
        unit="ratio",
        alert_start=ALERT.tz_localize(None),  # naive is read as UTC
    ).figure
    assert "alert fired 09:15 UTC" in line_labels(figure)
    assert legend_texts(figure)[0] == "5xx"
    assert figure.axes[0].get_ylabel() == "%"
    assert png_size(to_png(figure)) == (900, 350)


def test_timeseries_leaves_out_lines_outside_the_window():
    current, _ = latency_incident()
    figure = timeseries(current, title="t", alert_start=MINUTES[0] - pd.Timedelta("3h")).figure
    assert not any(label.startswith("alert fired") for label in line_labels(figure))


def test_timeseries_of_an_empty_result_is_the_no_data_placeholder():
    empty = pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"), "value": []})
    figure = timeseries(empty, title="queue depth").figure
    assert any("no data for queue depth" in t.get_text() for t in figure.axes[0].texts)


def test_ranked_bars_highlights_the_culprit_against_the_baseline_line():
    current, baseline = latency_incident()
    table = top_contributors(current, baseline, by="route", since=MINUTES[70])
    chart = ranked_bars(table, label="route", title="Which route slowed", highlight="/v1/vision")
    figure = chart.figure
    ax = figure.axes[0]
    bars = ax.patches
    assert len(bars) == 3
    top_bar = min(bars, key=lambda bar: bar.get_y())  # y axis inverted: first row at top
    assert top_bar.get_facecolor() != bars[1].get_facecolor()
    assert ax.get_yticklabels()[0].get_text() == "/v1/vision"
    assert "baseline (1.0x)" in line_labels(figure)
    assert any(text.get_text() == "4.5x" for text in ax.texts)
    png = to_png(figure)
    assert png_size(png)[0] == 900 and len(png) < 120_000


def test_ranked_bars_lists_a_label_value_without_baseline():
    table = pd.DataFrame(
        {"model_version": ["2.3.1", "2.4.0"], "ratio": [1.1, float("nan")]},
    )
    figure = ranked_bars(table, label="model_version", title="by version").figure
    assert any(text.get_text() == "no baseline" for text in figure.axes[0].texts)
    to_png(figure)


def test_ratios_spanning_decades_read_as_plain_multiples_on_a_log_axis():
    table = pd.DataFrame({"route": ["/v1/chat", "/v1/embed", "/v1/vision"], "ratio": [40, 0.5, 2]})
    figure = ranked_bars(table, label="route", title="Which route failed").figure
    ax = figure.axes[0]
    to_png(figure)  # the labels are set when the chart is drawn

    assert ax.get_xscale() == "log"
    labels = [tick.get_text() for tick in ax.get_xticklabels() if tick.get_text()]
    assert {"1x", "10x"} <= set(labels), labels
    assert not any("$" in label for label in labels)  # no mathtext ("10^1")


def narrow_chart() -> ChartFigure:
    """A chart whose layout shrinks its Axes enough that the draw places fewer ticks."""
    figure = ChartFigure(figsize=(4.0, 2.5), dpi=100, layout=TightOnce())
    ax = figure.add_subplot()
    ax.plot(np.linspace(0, 1_000, 50), np.linspace(0, 0.9, 50), label="a rather long label")
    ax.set_yticks([0.1, 0.5, 0.9], ["a long tick label here", "and another one", "third"])
    ax.set_xlabel("requests per second")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("throughput against an unusually long title", loc="left")
    return figure


@pytest.mark.parametrize(
    "chart",
    [
        narrow_chart,
        lambda: timeseries(latency_incident()[0], by="route", title="p99", alert_start=ALERT),
        lambda: ranked_bars(
            pd.DataFrame({"route": ["/v1/chat", "/v1/embed", "/v1/vision"], "ratio": [40, 0.5, 2]}),
            label="route",
            title="Which route failed",
        ),
    ],
    ids=["narrow", "timeseries", "log-bars"],
)
def test_ticks_computed_once_per_draw_draw_what_matplotlib_draws(chart, monkeypatch):
    """The PNG is byte for byte the one drawn with matplotlib asking for its ticks each time."""
    once = to_png(chart())
    monkeypatch.setattr(png_module, "_ticks_once", lambda figure: contextlib.nullcontext())
    assert once == to_png(chart())


def test_a_chart_changed_after_it_is_shown_draws_its_new_ticks():
    figure = narrow_chart()
    ax = figure.axes[0]
    to_png(figure)
    ax.xaxis.set_major_formatter(ticker.PercentFormatter(xmax=1_000))  # same limits, new labels
    assert any(label.get_text().endswith("%") for label in ax.get_xticklabels())

    ax.set_xlim(0, 500)
    figure.savefig(io.BytesIO(), format="png")  # matplotlib's own draw, as a user saves a chart
    assert [label.get_text() for label in ax.get_xticklabels()][-1] == "50%"


def test_no_data_says_so_visibly():
    figure = no_data("Queue depth", "no data for queue_depth: sum(inference_queue_depth)").figure
    assert any(t.get_text().startswith("no data for queue_depth") for t in figure.axes[0].texts)
    width, height = png_size(to_png(figure))
    assert width == 900 and height < 350


@pytest.mark.slow
def test_a_chart_displays_exactly_once_in_a_real_kernel():
    """The inline backend shows pyplot figures by itself; ours must appear once, as PNG."""
    root = Path(__file__).resolve().parents[1]
    source = (
        "import pandas as pd\n"
        "from workbooks.notebook.charts import timeseries\n"
        "index = pd.date_range('2026-11-02T08:00Z', periods=5, freq='min')\n"
        "timeseries(pd.Series([1.0, 2, 3, 2, 1], index=index), title='demo')"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(
        notebook, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    outputs = notebook.cells[0].outputs
    assert [output.output_type for output in outputs] == ["execute_result"]
    assert "image/png" in outputs[0].data
