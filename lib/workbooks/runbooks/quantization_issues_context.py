"""quantization-issues: the gap table, fp32 itself, numeric faults, and latency for context.

Steps of ``notebooks/quantization-issues.ipynb`` beside the gap judgement of
:mod:`workbooks.runbooks.quantization_issues` (which re-exports them).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.quantization_issues_data import (
    SLICE,
    THRESHOLDS,
    serving,
    serving_slices,
    with_slices,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FAULT = "fault"
# Where a faulty precision's traffic goes while it is fixed: the next wider one.
FALLBACK = {"int4": "int8", "int8": "fp16", "fp16": "fp32 (or bf16)", "bf16": "fp32"}


def share_text(share: float | None, *, signed: bool = False) -> str:
    """A share of outputs at the precision faults need: ``1.5%``, ``0.005%``."""
    if share is None or not math.isfinite(share):
        return "n/a"
    share = round(share, 7) or 0.0  # no "-0%"
    return f"{share * 100:{'+' if signed else ''}.2g}%"


def gap_table(
    incident: Incident, gaps: QueryResult, onset: analysis.Onset | None = None
) -> pd.DataFrame:
    """Precision x eval set: each gap to fp32 now and at baseline, in points; a heatmap of the
    change. Returns the table (``now (baseline)`` per cell) for the notebook to show."""
    if gaps.empty:
        return pd.DataFrame()
    result = serving_slices(gaps)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    table = analysis.top_contributors(result.current, result.baseline, by=SLICE, since=since)
    parts = result.current.drop_duplicates(SLICE).set_index(SLICE)
    table = table.assign(
        precision=table[SLICE].map(parts["precision"]), eval_set=table[SLICE].map(parts["eval_set"])
    )
    change = table.pivot(index="precision", columns="eval_set", values="delta") * 100
    text = table.assign(
        cell=[
            f"{now * 100:+.1f} ({base * 100:+.1f})"
            for now, base in zip(table["current"], table["baseline"], strict=True)
        ]
    ).pivot(index="precision", columns="eval_set", values="cell")
    order = [p for p in ("fp16", "bf16", "int8", "int4") if p in change.index]
    order += [p for p in change.index if p not in order]
    change, text = change.loc[order], text.loc[order]
    incident.show(_heatmap(incident, change, text))
    text.columns.name = "eval set: gap now (baseline), points"
    return text


def _heatmap(incident: Incident, change: pd.DataFrame, text: pd.DataFrame) -> charts.Chart:
    title = "Gap to fp32 by precision and eval set: now (baseline), points"
    return charts.Chart(_heatmap_figure, change, text, title=incident.chart_title(title))


def _heatmap_figure(change: pd.DataFrame, text: pd.DataFrame, *, title: str) -> Figure:
    """The heatmap's figure, made where it is drawn (:class:`workbooks.notebook.charts.Chart`)."""
    from workbooks.notebook.figures import new_figure

    figure = new_figure(height=1.4 + 0.45 * len(change), layout="tight")
    ax = figure.add_subplot()
    values = change.to_numpy(dtype=float)
    reach = max(2.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 2.0)
    image = ax.imshow(values, cmap="RdBu", vmin=-reach, vmax=reach, aspect="auto")
    ax.set_xticks(range(change.shape[1]), list(change.columns), fontsize=8)
    ax.set_yticks(range(change.shape[0]), list(change.index), fontsize=8)
    for row in range(change.shape[0]):
        for column in range(change.shape[1]):
            dark = abs(values[row, column]) > 0.6 * reach  # white on the deep colours
            ax.text(
                column,
                row,
                text.iat[row, column],
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if dark else "black",
            )
    figure.colorbar(image, ax=ax, label="gap change, points (red: wider)")
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    return figure


def version_chart(
    incident: Incident, gaps: QueryResult, names: tuple[str, ...], since: pd.Timestamp
) -> None:
    """The gap of slices ``names`` per model version, each version on its own line: a version
    that did it widens while the one evaluated beside it (or before it) stays."""
    frame = with_slices(gaps.current)
    if "model_version" not in frame.columns or frame["model_version"].nunique() < 2:
        return
    rows = frame[frame[SLICE].isin(names)]
    lines = rows.groupby(["timestamp", "model_version"], as_index=False)["value"].mean()
    what = names[0] if len(names) == 1 else f"the {len(names)} slices that widened"
    incident.show(
        charts.timeseries(
            lines,
            by="model_version",
            title=incident.chart_title(f"Gap to fp32 of {what}, by model version"),
            subtitle=", ".join(names),
            unit="ratio",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=since,
        )
    )


def fp32_fell(
    incident: Incident, fp32: QueryResult, onset: analysis.Onset | None = None
) -> tuple[str, ...]:
    """Did fp32 itself fall? Then every precision fell with it: not a quantization problem.

    Records a finding that says so and points to the accuracy-drop workbook; returns the eval
    sets where fp32 fell (empty when it held).
    """
    if fp32.empty:
        return ()
    limits = THRESHOLDS.of(incident)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    keys = ("eval_set",)
    result = dataclasses.replace(
        fp32,
        current=serving(fp32.current, keys),
        baseline=serving(fp32.baseline, keys) if fp32.baseline is not None else None,
    )
    found = steps.breakdown(
        incident,
        result,
        by="eval_set",
        since=since,
        measure="delta",
        direction="down",
        severity=limits.ladder("fp32_drop"),
        min_change=limits["fp32_drop_warning"],
        gap=limits["stands_out_gap"],
        what="fp32 accuracy",
        unit="ratio",
        chart=False,
        record=False,
    )
    if found is None:
        return ()
    fell = found.culprits or (found.moved if found.spread else ())
    if fell:
        _record_fp32_fell(incident, fp32, result, found, fell)
        return tuple(fell)
    held = (
        f"the fp32 reference held on every eval set (largest drop "
        f"{steps.change_of(found.change, 'delta', 'ratio')})"
    )
    steps.checked(incident, held)
    incident.record(
        Finding(
            severity="info",
            title=f"The{held[3:]}: any change is in the quantized precisions",
            subject={"precision": "fp32"},
            metric=fp32.name,
        )
    )
    return ()


def _record_fp32_fell(
    incident: Incident,
    fp32: QueryResult,
    result: QueryResult,
    found: steps.Breakdown,
    fell: tuple[str, ...],
) -> None:
    worst = found.row(fell[0])
    frame = result.current
    modalities = (
        sorted(set(frame.loc[frame["eval_set"].isin(fell), "modality"].astype(str)))
        if "modality" in frame.columns
        else []
    )
    start = f"{pd.Timestamp(incident.starts_at):%Y-%m-%dT%H:%M:%SZ}"
    incident.record(
        Finding(
            severity=THRESHOLDS.of(incident).severity(found.change, "fp32_drop"),
            title=f"fp32 fell as well on {steps.join(fell)} "
            f"({steps.change_of(found.change, 'delta', 'ratio')}: "
            f"{steps.change_text(float(worst['current']), float(worst['baseline']), 'ratio')}): "
            "every precision dropped with the reference, so this is NOT a quantization problem",
            detail="The gap of each quantized precision to fp32 is judged below, but no "
            "precision is blamed while fp32 itself fell.",
            subject={"eval_set": list(fell), **({"modality": modalities} if modalities else {})},
            metric=fp32.name,
            observed=float(worst["current"]),
            baseline=float(worst["baseline"]),
            unit="ratio",
            cause="data",
            recommendation="Follow the accuracy-drop runbook for the model itself: "
            f"`workbook open accuracy-drop --at {start} --label service={incident.service}`.",
        )
    )


def numeric_faults(
    incident: Incident, faults: QueryResult, onset: analysis.Onset | None = None
) -> tuple[str, ...]:
    """Section 3: NaN, overflowed and empty outputs per precision against their baseline share.

    Names the (precision, kind) pairs that rose clearly more than the rest, above the warning
    share and ``fault_ratio_moved`` times their own baseline. Returns their precisions.
    """
    if faults.empty:
        return ()
    limits = THRESHOLDS.of(incident)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    current, base = _with_fault(faults.current), _with_fault(faults.baseline)
    incident.show(
        charts.timeseries(
            current,
            baseline=base,
            by=FAULT,
            title=incident.chart_title("Faulty outputs by precision and kind (dashed: baseline)"),
            unit="ratio",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=onset.at if onset else None,
        )
    )
    table = analysis.top_contributors(current, base, by=FAULT, since=since)
    found = steps.classify(
        table,
        by=FAULT,
        measure="delta",
        min_change=limits["fault_share_warning"],
        gap=limits["stands_out_gap"],
    )
    # A share a few times the usual noise is not a fault; one never seen before (no ratio) is.
    culprits = [
        name
        for name in found.culprits
        if math.isnan(ratio := float(found.row(name)["ratio"]))
        or ratio >= limits["fault_ratio_moved"]
    ]
    if not culprits:
        largest = share_text(found.change, signed=True)
        steps.checked(incident, f"numeric faults by precision: none rose (largest {largest})")
        incident.record(
            Finding(
                severity="info",
                title="No NaN, overflowed or empty outputs rose on any precision against its "
                f"baseline share (largest change {largest})",
                subject={"precision": "*"},
                metric=faults.name,
            )
        )
        return ()
    return _record_faults(
        incident, faults, dataclasses.replace(found, culprits=tuple(culprits)), since
    )


def _with_fault(frame: pd.DataFrame | None) -> pd.DataFrame:
    """``frame`` with a ``fault`` column naming its precision and kind (``fp16 nan``)."""
    if frame is None or frame.empty:
        return pd.DataFrame({"timestamp": [], "precision": [], "kind": [], FAULT: [], "value": []})
    pairs = zip(frame["precision"].tolist(), frame["kind"].tolist(), strict=True)  # as with_slices
    names = [f"{p} {k}" for p, k in pairs]
    return frame.assign(**{FAULT: names})


def _record_faults(
    incident: Incident, faults: QueryResult, found: steps.Breakdown, since: pd.Timestamp
) -> tuple[str, ...]:
    rows = _with_fault(faults.current).drop_duplicates(FAULT).set_index(FAULT)
    rows = rows.loc[list(found.culprits)]
    precisions = sorted(set(rows["precision"].astype(str)))
    kinds = sorted(set(rows["kind"].astype(str)))
    worst = found.row(found.culprits[0])
    fallback = FALLBACK.get(precisions[0], "fp32")
    incident.record(
        Finding(
            severity=THRESHOLDS.of(incident).severity(found.change, "fault_share"),
            title=f"{steps.join(precisions)} outputs came out {steps.join(kinds)}: "
            f"{share_text(float(worst['current']))} of them since {since:%H:%M} UTC against "
            f"{share_text(float(worst['baseline']))} at baseline; other precisions and kinds "
            f"{share_text(found.others_change, signed=True)}",
            detail="A numeric fault of the quantized kernels (activations beyond the "
            "precision's range), not a model that answers worse.",
            subject={"precision": precisions, "kind": kinds},
            metric=faults.name,
            observed=float(worst["current"]),
            baseline=float(worst["baseline"]),
            unit="ratio",
            cause="limit",
            recommendation=f"Route {steps.join(precisions)} traffic to {fallback} now; then look "
            f"for inputs whose activations leave the {steps.join(precisions)} range (very long "
            "prompts, extreme pixel or audio levels), enable fp32 accumulation or clamping in the "
            "affected layers, and re-export.",
        )
    )
    return tuple(precisions)


def latency(incident: Incident, p99: QueryResult) -> None:
    """Context: p99 inference time per precision. A quantized precision faster than fp32 is
    what quantization is for, never a finding; one slower than fp32 may have lost its kernels."""
    incident.timeseries(p99, by="precision")
    if p99.empty:
        return
    now = analysis.to_wide(p99.current, "precision").tail(10).median()
    if "fp32" not in now.index or not math.isfinite(float(now["fp32"])):
        steps.checked(incident, "latency by precision: no fp32 reference to compare")
        return
    reference = float(now["fp32"])
    ratios = {str(p): float(v) / reference for p, v in now.items() if p != "fp32" and reference}
    slower = sorted(p for p, r in ratios.items() if r >= 1.0)
    text = ", ".join(f"{p} {r:.2f}x" for p, r in sorted(ratios.items()))
    steps.checked(incident, f"latency by precision against fp32: {text}")
    verdict = (
        f"{steps.join(slower)} no faster than fp32: its quantized kernels may have fallen back "
        "to a slow path"
        if slower
        else "faster, as quantization should be (context, not a cause)"
    )
    fp32_p99 = steps.change_of(reference, "delta", "seconds")
    incident.record(
        Finding(
            severity="info",
            title=f"p99 inference time against fp32 ({fp32_p99}): {text}; {verdict}",
            subject={"precision": slower or "*"},
            metric=p99.name,
            unit="seconds",
        )
    )
