"""quantization-issues: which quantized precision lost accuracy to fp32, where, and why.

Cells of ``notebooks/quantization-issues.ipynb`` call these steps in order; each records findings.
The judgement is on the GAP to fp32 of each slice (a precision on an eval set, see
:mod:`workbooks.runbooks.quantization_issues_data`) against that slice's own baseline, never
the absolute accuracy nor the size of the gap: int4 always trails fp32, and that is the price of
int4. Before any precision is blamed, fp32 itself is checked: when it fell too, the model got
worse at every precision and the accuracy-drop runbook is the one to follow. A version is named
only when the versions evaluated side by side show the gap moved with it (the older version's
gap stayed) and it rolled out near the onset.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Cause, Finding
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.quantization_issues_context import (
    fp32_fell,
    gap_table,
    latency,
    numeric_faults,
    version_chart,
)
from workbooks.runbooks.quantization_issues_data import (
    SLICE,
    THRESHOLDS,
    eval_sets_of,
    serving_slices,
    slice_parts,
    version_changes,
)

__all__ = [
    "THRESHOLDS",
    "fp32_fell",
    "gap_table",
    "latency",
    "numeric_faults",
    "overview",
    "resolution",
    "still_happening",
    "which",
]
ROLLOUT_NEAR = timedelta(minutes=20)
RECENT = timedelta(minutes=10)


def still_happening(incident: Incident, gaps: QueryResult) -> analysis.Onset | None:
    """Section 2: is any slice's gap still wider than its baseline over the last minutes?

    Records "Still happening" or "Not happening now" for the worst slice and returns when its
    gap began to widen (None when it did not, or nothing is wrong now).
    """
    if gaps.empty:
        return None
    result = serving_slices(gaps)
    since = pd.Timestamp(incident.window.end) - pd.Timedelta(RECENT)
    table = analysis.top_contributors(result.current, result.baseline, by=SLICE, since=since)
    found = steps.classify(table, by=SLICE, measure="delta", direction="down")
    if found.table.empty or pd.isna(found.table["change"].iloc[0]):
        return None
    worst = found.table.iloc[0]
    widened = float(worst["change"])
    grade = THRESHOLDS.of(incident).severity(widened, "gap_widened")
    parts = slice_parts(result.current, (str(worst[SLICE]),))
    numbers = _gap_numbers(float(worst["current"]), float(worst["baseline"]))
    if grade == "info":
        title = (
            "Not happening now: over the last 10 min every quantized precision's gap to fp32 is "
            f"within its baseline (worst {worst[SLICE]}, {steps.points_text(widened)}: {numbers})"
        )
    else:
        title = (
            f"Still happening: {worst[SLICE]} trails fp32 by "
            f"{steps.points_text(-float(worst['current']), signed=False)}, "
            f"{steps.points_text(widened, signed=False)} more than its baseline over the last "
            f"10 min ({numbers})"
        )
    finding = Finding(
        severity=grade,
        title=title,
        subject={"precision": parts["precision"][0], "eval_set": parts["eval_set"][0]},
        metric=gaps.name,
        observed=float(worst["current"]),
        baseline=float(worst["baseline"]),
        unit="ratio",
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=grade != "info", finding=finding)
    ongoing = "yes" if grade != "info" else "no"
    steps.checked(incident, f"still happening: {ongoing} ({worst[SLICE]}, {numbers})")
    if grade == "info":
        return None
    series = analysis.series_of(result.current, **{SLICE: str(worst[SLICE])})
    # Gaps move by points: judge the shift against the noise, not against the gap's size.
    onset = analysis.find_onset(series, min_relative=0.01)
    return onset if onset is not None and onset.direction == "down" else None


def _gap_numbers(current: float, baseline: float) -> str:
    return f"gap {steps.points_text(baseline)} → {steps.points_text(current)}"


def overview(
    incident: Incident, gaps: QueryResult, versions: QueryResult, onset: analysis.Onset | None
) -> pd.DataFrame:
    """The gap per precision over time (its slice that widened most), rollouts marked."""
    rollouts = (
        analysis.changes(versions.current, label="model_version", by=[])
        if not versions.empty
        else pd.DataFrame()
    )
    if gaps.empty:
        return rollouts
    result = serving_slices(gaps)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    table = analysis.top_contributors(
        result.current, result.baseline, by=SLICE, since=since, direction="down"
    )
    table = table.assign(change=-table["delta"]).sort_values("change", ascending=False)
    precision_of = result.current.drop_duplicates(SLICE).set_index(SLICE)["precision"]
    shown = table.assign(precision=table[SLICE].map(precision_of)).drop_duplicates("precision")
    keep = set(shown[SLICE])
    baseline = result.baseline if result.baseline is not None else result.current[:0]
    incident.show(
        charts.timeseries(
            result.current[result.current[SLICE].isin(keep)],
            baseline=baseline[baseline[SLICE].isin(keep)],
            by=SLICE,
            title=incident.chart_title(
                "Gap to fp32 per precision, on its eval set that widened most (dashed: baseline)"
            ),
            unit="ratio",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=onset.at if onset else None,
            markers=rollouts if len(rollouts) else None,
        )
    )
    return rollouts


def which(
    incident: Incident,
    gaps: QueryResult,
    versions: QueryResult,
    onset: analysis.Onset | None,
    *,
    fp32_dropped: tuple[str, ...] = (),
    faulty: tuple[str, ...] = (),
) -> steps.Breakdown | None:
    """Which slices' gaps widened against their own baseline, and did a version do it?

    ``fp32_dropped`` (from :func:`fp32_fell`): no precision is blamed. ``faulty`` (from
    :func:`numeric_faults`): those precisions' widening is explained by their faults.
    """
    if gaps.empty:
        return None
    limits = THRESHOLDS.of(incident)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    result = serving_slices(gaps)
    found = steps.breakdown(
        incident,
        result,
        by=SLICE,
        since=since,
        measure="delta",
        direction="down",
        severity=limits.ladder("gap_widened"),
        min_change=limits["gap_widened_warning"],
        gap=limits["stands_out_gap"],
        what="gap to fp32",
        unit="ratio",
        record=False,
    )
    if found is None:
        return None
    if not found.culprits:
        _no_slice(incident, gaps, found, since=since)
        return found
    if fp32_dropped:
        steps.checked(
            incident,
            f"gaps to fp32: {steps.join(found.culprits)} widened, but fp32 fell too: not blamed",
        )
        return found
    about = _about(result.current, found.culprits)
    precisions = about["precision"]
    if set(precisions) <= set(faulty):
        _record_slices(incident, result, found, about, cause=None, explained="numeric faults")
        return found
    if _follows_version(incident, gaps, versions, found.culprits, about, since=since):
        _record_slices(incident, result, found, about, cause=None, explained="the version above")
        return found
    cause: Cause = "config" if "modality" in about or len(about["eval_set"]) > 2 else "data"
    _record_slices(incident, result, found, about, cause=cause, explained=None)
    return found


def _follows_version(
    incident: Incident,
    gaps: QueryResult,
    versions: QueryResult,
    names: tuple[str, ...],
    about: dict[str, list[str]],
    *,
    since: pd.Timestamp,
) -> bool:
    """Whether the widening follows a version: each version evaluated is a unit of the rule
    (:func:`workbooks.runbooks.steps.judge_rollout`), so the older version's gap, still
    evaluated beside the new one or before it, must have stayed."""
    limits = THRESHOLDS.of(incident)
    precisions = about["precision"]
    version_chart(incident, gaps, names, since)
    verdicts = steps.correlate_rollouts(
        incident,
        versions,
        version_changes(gaps, names, since=since),
        onset=since,
        by=None,
        severity=limits.ladder("gap_widened"),
        min_change=limits["gap_widened_warning"],
        gap=limits["stands_out_gap"],
        measure="delta",
        unit="ratio",
        what=f"the wider gap of {steps.join(precisions)}",
        subject=about,
        before=ROLLOUT_NEAR,
        after=ROLLOUT_NEAR,
        recommendation=_rollback_text(versions, precisions),
    )
    return any(verdict.named for verdict in verdicts)


def _about(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, list[str]]:
    """The subject of the named slices: precision and eval sets, and the modality only when
    the eval sets are every one of that modality (more than one of them)."""
    parts = slice_parts(frame, names)
    about = {"precision": parts["precision"], "eval_set": parts["eval_set"]}
    modalities = parts.get("modality", [])
    if (
        len(modalities) == 1
        and len(parts["eval_set"]) > 1
        and set(parts["eval_set"]) == eval_sets_of(frame, modalities[0])
    ):
        about["modality"] = modalities
    return about


def _record_slices(
    incident: Incident,
    result: QueryResult,
    found: steps.Breakdown,
    about: dict[str, list[str]],
    *,
    cause: Cause | None,
    explained: str | None,
) -> None:
    precision = steps.join(about["precision"])
    where = (
        f"the {steps.join(about['modality'])} modality ({steps.join(about['eval_set'])})"
        if "modality" in about
        else steps.join(about["eval_set"])
    )
    worst = found.row(found.culprits[0])
    grade = THRESHOLDS.of(incident).severity(found.change, "gap_widened")
    if cause is not None:
        grade = steps.as_severe_as_symptom(incident, grade, about)
    title = (
        f"{precision} lost {steps.points_text(found.change, signed=False)} more to fp32 on "
        f"{where} against its own baseline (gap "
        f"{steps.points_text(float(worst['baseline']))} → "
        f"{steps.points_text(float(worst['current']))}){_onset_text(result, found.culprits[0])}; "
        f"other slices {_points(found.others_change)}{_largest_gap(found)}"
    )
    if explained is not None:
        title += f" (explained by {explained})"
        grade = "warning" if grade == "critical" else grade
    incident.record(
        Finding(
            severity=grade,
            title=title,
            subject={**about, SLICE: list(found.culprits)},
            metric=result.name,
            observed=float(worst["current"]),
            baseline=float(worst["baseline"]),
            unit="ratio",
            cause=None if explained is not None else cause,
            recommendation=f"Serve {where} from a wider precision than {precision} now (route "
            f"it to fp16 or fp32); then re-calibrate {precision} with samples of "
            f"{steps.join(about['eval_set'])} in the calibration set and re-run that eval at "
            f"{precision} before switching back.",
        )
    )


def _points(delta: float | None) -> str:
    """Signed points, without a "-0.0" for a change that rounds to nothing."""
    return steps.points_text(None if delta is None else (round(delta, 3) or 0.0))


def _onset_text(result: QueryResult, name: str) -> str:
    onset = analysis.find_onset(
        analysis.series_of(result.current, **{SLICE: name}), min_relative=0.01
    )
    return f" from {onset.at:%H:%M} UTC" if onset and onset.direction == "down" else ""


def _largest_gap(found: steps.Breakdown) -> str:
    """Names the widest gap when it is not a culprit: the reader's first suspect, cleared."""
    widest = found.table.sort_values("current", kind="stable").iloc[0]
    if str(widest[SLICE]) in found.culprits:
        return ""
    return (
        f". The widest gap, {widest[SLICE]} at {steps.points_text(float(widest['current']))}, "
        f"moved only {steps.points_text(abs(float(widest['delta'])), signed=False)} from its "
        "baseline: the price of "
        "that precision, not this incident"
    )


def _no_slice(
    incident: Incident, gaps: QueryResult, found: steps.Breakdown, *, since: pd.Timestamp
) -> None:
    largest = steps.change_of(found.change, "delta", "ratio")
    top = found.table[SLICE].iloc[0] if len(found.table) else "none"
    if found.spread:
        incident.record(
            Finding(
                severity="info",
                title=f"Every precision's gap moved alike (largest {largest} on {top}): the "
                "fp32 reference or the eval job changed, not one quantized model",
                subject={"precision": "*"},
                metric=gaps.name,
            )
        )
    steps.checked(incident, f"gaps to fp32: no slice widened alone ({largest} largest, on {top})")
    if not found.spread:
        incident.record(
            Finding(
                severity="info",
                title="No slice's gap to fp32 widened past "
                f"{steps.points_text(THRESHOLDS.of(incident)['gap_widened_warning'], signed=False)}"
                f" against its own baseline since {since:%H:%M} UTC (median; largest {largest}, "
                f"on {top})",
                subject={"precision": "*"},
                metric=gaps.name,
            )
        )


def _rollback_text(versions: QueryResult, precisions: list[str]) -> str:
    found = steps.rollouts(versions.current, by=None) if not versions.empty else []
    newest = found[-1].version if found else "the new version"
    return (
        f"Roll back the {steps.join(precisions)} export of {newest} to the previous version "
        f"(pin model_version for the {steps.join(precisions)} variant), then diff the two "
        "exports' quantization configs (calibration set, per-channel scales, skipped layers)."
    )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: every quantized precision's gap to fp32 is within its own baseline "
            "on every eval set, fp32 held and no numeric faults rose. The alert's threshold may "
            "be too tight, or it fired on eval noise."
        ),
        next_steps=[
            "Widen the window (`lookback='12h'`) and compare the gaps again.",
            "Check the eval job (data, labels, sample size) per precision.",
            "Compare on-device results per export target (the mobile-export-failure runbook).",
        ],
    )
