"""accuracy-drop: which eval sets and modalities dropped, since when, and whether a version did it.

Cells of ``notebooks/accuracy-drop.ipynb`` call these steps in order; each records findings.
Accuracy is compared per eval set against that eval set's own baseline, in points (0.01 = one
point), so an eval set that is always the least accurate is not blamed for it. A version is
blamed only when the drop follows it: the eval sets dropped under the new version and not under
the old one still evaluated beside it, and it rolled out near the onset.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "accuracy-drop",
    # Drop in accuracy against the eval set's own baseline (0.05 = five points).
    accuracy_drop_critical=0.05,
    accuracy_drop_warning=0.02,
    # The dropped eval sets stand this many times above the next one's drop.
    stands_out_gap=2.0,
)
ROLLOUT_NEAR = timedelta(minutes=20)


def serving(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per eval set over time (long frame), read from the newest version at each point.

    During a rollout both versions' series can show for a few minutes (Prometheus keeps a series
    visible for 5 minutes after its last sample); the newer one is what users get.
    """
    if frame.empty:
        return frame
    if "model_version" in frame.columns:
        first_seen = frame.groupby("model_version")["timestamp"].transform("min")
        newest = first_seen.groupby([frame["timestamp"], frame["eval_set"]]).transform("max")
        frame = frame[first_seen == newest]
    return frame.groupby(["timestamp", "eval_set"], as_index=False)["value"].mean()


def _serving_result(accuracy: QueryResult) -> QueryResult:
    baseline = accuracy.baseline
    return dataclasses.replace(
        accuracy,
        current=serving(accuracy.current),
        baseline=serving(baseline) if baseline is not None else None,
    )


def still_happening(incident: Incident, accuracy: QueryResult) -> analysis.Onset | None:
    """Immediate check: accuracy now against the baseline; finds when the worst drop began."""
    if accuracy.empty:
        return None
    result = _serving_result(accuracy)
    recent = steps.still_happening(
        incident,
        result,
        by="eval_set",
        measure="delta",
        direction="down",
        severity=THRESHOLDS.of(incident).ladder("accuracy_drop"),
        what="accuracy",
        unit="ratio",
    )
    if recent is None:
        return None
    series = analysis.series_of(result.current, eval_set=recent.subject["eval_set"])
    # Accuracy moves by points, not by tens of percent: judge the shift against noise alone.
    onset = analysis.find_onset(series, min_relative=0.01)
    return onset if onset is not None and onset.direction == "down" else None


def overview(
    incident: Incident, accuracy: QueryResult, versions: QueryResult, onset: analysis.Onset | None
) -> pd.DataFrame:
    """Accuracy per eval set against the baseline, with model rollouts marked."""
    rollouts = (
        analysis.changes(versions.current, label="model_version", by=[])
        if not versions.empty
        else pd.DataFrame()
    )
    if not accuracy.empty:
        result = _serving_result(accuracy)
        incident.show(
            charts.timeseries(
                result.current,
                baseline=result.baseline,
                by="eval_set",
                title=incident.chart_title("Online accuracy by eval set (dashed: baseline)"),
                unit="ratio",
                alert_start=pd.Timestamp(incident.starts_at),
                onset=onset.at if onset else None,
                markers=rollouts if len(rollouts) else None,
            )
        )
    return rollouts


def version_drops(
    accuracy: QueryResult, eval_sets: tuple[str, ...], *, since: pd.Timestamp
) -> dict[str, float | None]:
    """model_version -> its drop on ``eval_sets`` since ``since``, against their baselines.

    Each version is compared with the eval set's baseline (whatever served then): a new version
    has no baseline of its own. None for a version not evaluated since ``since``.
    """
    frame = accuracy.current
    baseline = serving(accuracy.baseline if accuracy.baseline is not None else frame[:0])
    if "model_version" not in frame.columns:
        return {}
    drops: dict[str, float | None] = {}
    for version, rows in frame.groupby("model_version"):
        per_set = []
        for eval_set in eval_sets:
            now = analysis.to_wide(rows[rows["eval_set"] == eval_set], "eval_set", agg="mean")
            before = analysis.to_wide(baseline[baseline["eval_set"] == eval_set], "eval_set")
            if eval_set not in now.columns or eval_set not in before.columns:
                continue
            change = analysis.compare(now[eval_set], before[eval_set], since=since)
            if change.points:
                per_set.append(-change.delta)
        drops[str(version)] = float(np.median(per_set)) if per_set else None
    return drops


def which(
    incident: Incident, accuracy: QueryResult, versions: QueryResult, onset: analysis.Onset | None
) -> None:
    """Which eval sets (and modalities) dropped against their own baseline, and which version."""
    if accuracy.empty:
        return
    limits = THRESHOLDS.of(incident)
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    result = _serving_result(accuracy)
    found = steps.breakdown(
        incident,
        result,
        by="eval_set",
        since=since,
        measure="delta",
        direction="down",
        severity=limits.ladder("accuracy_drop"),
        min_change=limits["accuracy_drop_warning"],
        gap=limits["stands_out_gap"],
        what="accuracy",
        unit="ratio",
        record=False,
    )
    if found is None:
        return
    dropped = found.culprits or (found.moved if found.spread else ())
    if not dropped:
        _nothing_dropped(incident, accuracy, found)
        return
    modalities = _modalities(accuracy, dropped)
    about = {"eval_set": list(dropped), **({"modality": modalities} if modalities else {})}
    if found.spread:
        _every_set_dropped(incident, accuracy, dropped)
    steps.correlate_rollouts(
        incident,
        versions,
        version_drops(accuracy, dropped, since=since),
        onset=since,
        by=None,
        severity=limits.ladder("accuracy_drop"),
        min_change=limits["accuracy_drop_warning"],
        gap=limits["stands_out_gap"],
        measure="delta",
        unit="ratio",
        what=f"the accuracy drop on {steps.join(dropped)}",
        subject=about,
        before=ROLLOUT_NEAR,
        after=ROLLOUT_NEAR,
        recommendation=f"Roll back to the previous model version and re-run the "
        f"{steps.join(dropped)} eval; diff the new version's export (quantization, "
        f"preprocessing for {steps.join(modalities) or 'this modality'}).",
    )
    if found.culprits:
        _record_culprits(incident, result, found, about, modalities)


def _record_culprits(
    incident: Incident,
    result: QueryResult,
    found: steps.Breakdown,
    about: dict[str, list[str]],
    modalities: list[str],
) -> None:
    finding = steps.culprit_finding(
        incident,
        result,
        found,
        what="accuracy",
        unit="ratio",
        severity=THRESHOLDS.of(incident).ladder("accuracy_drop"),
        # Dropped on every version alike (or no version to blame): the inputs or the eval data.
        cause="data",
        recommendation="Check the eval job's data and labels for "
        f"{steps.join(modalities) or 'these eval sets'}, and the preprocessing of that input "
        "(image decoding, audio resampling) on every version.",
    )
    incident.record(dataclasses.replace(finding, subject={**finding.subject, **about}))


def _every_set_dropped(incident: Incident, accuracy: QueryResult, dropped: tuple[str, ...]) -> None:
    steps.checked(incident, f"accuracy by eval set: every one dropped ({steps.join(dropped)})")
    incident.record(
        Finding(
            severity="warning",
            title=f"Every eval set dropped ({steps.join(dropped)}): a model-wide regression "
            "or an eval pipeline problem",
            subject={"service": incident.service},
            metric=accuracy.name,
        )
    )


def _nothing_dropped(incident: Incident, accuracy: QueryResult, found: steps.Breakdown) -> None:
    largest = steps.change_of(found.change, "delta", "ratio")
    top = found.table[found.by].iloc[0] if len(found.table) else "none"
    steps.checked(incident, f"accuracy by eval set: none dropped (largest {largest} on {top})")
    incident.record(
        Finding(
            severity="info",
            title="No eval set dropped against its own baseline: the accuracy alert may be "
            "noise, or the eval pipeline changed",
            detail=f"largest drop {largest} on {top}",
            subject={"service": incident.service},
            metric=accuracy.name,
            recommendation="Check the eval job (data, labels) before touching the model.",
        )
    )


def _modalities(accuracy: QueryResult, eval_sets: tuple[str, ...]) -> list[str]:
    frame = accuracy.current
    if "modality" not in frame.columns:
        return []
    rows = frame[frame["eval_set"].isin(eval_sets)]
    return sorted(str(m) for m in rows["modality"].dropna().unique() if str(m))


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: accuracy on every eval set is within its own baseline. The alert may "
            "be noise, or the eval pipeline itself changed."
        ),
        next_steps=[
            "Check the eval job's input data and labels.",
            "Compare accuracy per client app version (the mobile runbooks).",
        ],
    )
