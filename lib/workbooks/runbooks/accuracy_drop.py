"""accuracy-drop: which eval sets and modalities dropped, since when, and which model version.

Cells of ``notebooks/accuracy-drop.ipynb`` call these steps in order; each records findings.
Accuracy is compared per eval set against that eval set's own baseline, in points (0.01 = one
point), so an eval set that is always the least accurate is not blamed for it.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks.common import join, resolution_steps

CRITICAL_DROP = 0.05
WARNING_DROP = 0.02
# A drop stands out when it is at least this many times the next eval set's.
GAP = 2.0
ROLLOUT_NEAR = timedelta(minutes=20)


def _by_eval_set(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per eval set over time, read from the newest version serving at each point.

    During a rollout both versions' series can show for a few minutes (Prometheus keeps a series
    visible for 5 minutes after its last sample); the newer one is what users get.
    """
    if frame.empty or "model_version" not in frame.columns:
        return analysis.to_wide(frame, "eval_set", agg="mean")
    first_seen = frame.groupby("model_version")["timestamp"].transform("min")
    newest = first_seen.groupby([frame["timestamp"], frame["eval_set"]]).transform("max")
    return analysis.to_wide(frame[first_seen == newest], "eval_set", agg="mean")


def drops(accuracy: QueryResult, *, since: pd.Timestamp | None) -> pd.DataFrame:
    """Per eval set: accuracy now, in the baseline, and the change (most dropped first)."""
    now = _by_eval_set(accuracy.current)
    before = (
        _by_eval_set(accuracy.baseline)
        if accuracy.baseline is not None and not accuracy.baseline.empty
        else pd.DataFrame()
    )
    rows = []
    for eval_set in now.columns:
        baseline = before[eval_set] if eval_set in before.columns else pd.Series(dtype=float)
        change = analysis.compare(now[eval_set], baseline, since=since)
        rows.append((eval_set, change.current, change.baseline, change.delta))
    table = pd.DataFrame(rows, columns=["eval_set", "current", "baseline", "delta"])
    return table.sort_values("delta", na_position="last").reset_index(drop=True)


def _modality(accuracy: QueryResult, eval_set: str) -> str:
    frame = accuracy.current
    if "modality" not in frame.columns:
        return ""
    values = frame.loc[frame["eval_set"] == eval_set, "modality"].dropna().unique()
    return str(values[0]) if len(values) else ""


def _serving_version(accuracy: QueryResult, eval_set: str) -> str:
    frame = accuracy.current
    rows = frame[frame["eval_set"] == eval_set].sort_values("timestamp")
    return str(rows["model_version"].iloc[-1]) if len(rows) else ""


def still_happening(incident: Incident, accuracy: QueryResult) -> analysis.Onset | None:
    """Immediate check: accuracy now against the baseline; finds when the worst drop began."""
    if accuracy.empty:
        return None
    table = drops(accuracy, since=pd.Timestamp(incident.window.end) - pd.Timedelta(minutes=10))
    worst = table.iloc[0]
    delta = float(worst["delta"])
    if math.isnan(delta) or delta > -WARNING_DROP:
        incident.record(
            Finding(
                severity="info",
                title="Accuracy is within its baseline on every eval set now "
                f"(largest change {_points(delta)} on {worst['eval_set']})",
                subject={"service": incident.service},
                metric=accuracy.name,
                recommendation="If the alert keeps firing, check the eval pipeline itself.",
            )
        )
    else:
        incident.record(
            Finding(
                severity="critical" if delta <= -CRITICAL_DROP else "warning",
                title=(
                    f"Still happening: accuracy on {worst['eval_set']} is "
                    f"{_points(abs(delta), signed=False)} below its baseline over the last 10 min "
                    f"({format_value(worst['baseline'], 'ratio')} → "
                    f"{format_value(worst['current'], 'ratio')})"
                ),
                subject={"eval_set": str(worst["eval_set"])},
                metric=accuracy.name,
                observed=float(worst["current"]),
                baseline=float(worst["baseline"]),
                unit="ratio",
            )
        )
    series = _by_eval_set(accuracy.current)[str(worst["eval_set"])]
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
        else None
    )
    if not accuracy.empty:
        current = accuracy.current.groupby(["timestamp", "eval_set"], as_index=False)["value"]
        baseline = (
            accuracy.baseline.groupby(["timestamp", "eval_set"], as_index=False)["value"].mean()
            if accuracy.baseline is not None and not accuracy.baseline.empty
            else None
        )
        incident.show(
            charts.timeseries(
                current.mean(),
                baseline=baseline,
                by="eval_set",
                title=incident.chart_title("Online accuracy by eval set (dashed: baseline)"),
                unit="ratio",
                alert_start=pd.Timestamp(incident.starts_at),
                onset=onset.at if onset else None,
                markers=rollouts if rollouts is not None and len(rollouts) else None,
            )
        )
    return rollouts if rollouts is not None else pd.DataFrame()


def which(
    incident: Incident,
    accuracy: QueryResult,
    rollouts: pd.DataFrame,
    onset: analysis.Onset | None,
) -> None:
    """Which eval sets (and modalities) dropped against their own baseline, and which version."""
    if accuracy.empty:
        return
    since = onset.at if onset is not None else pd.Timestamp(incident.starts_at)
    table = drops(accuracy, since=since)
    incident.show(
        charts.ranked_bars(
            table.assign(points=table["delta"] * 100),
            label="eval_set",
            value="points",
            unit="points",
            title=incident.chart_title("Accuracy change against own baseline (points)"),
            highlight=str(table["eval_set"].iloc[0]),
        )
    )
    deltas = table["delta"].to_numpy(dtype=float)
    culprits: list[int] = []
    for index, delta in enumerate(deltas):
        if not math.isfinite(delta) or delta > -WARNING_DROP:
            break
        following = deltas[index + 1] if index + 1 < len(deltas) else 0.0
        culprits.append(index)
        if not math.isfinite(following) or abs(delta) >= GAP * max(-following, 0.0):
            break
    if not culprits:
        incident.record(
            Finding(
                severity="info",
                title="No eval set dropped against its own baseline: the accuracy alert may be "
                "noise, or the eval pipeline changed",
                detail=f"largest change {_points(float(deltas[0]))} on {table['eval_set'].iloc[0]}",
                subject={"service": incident.service},
                metric=accuracy.name,
                recommendation="Check the eval job (data, labels) before touching the model.",
            )
        )
        return
    if len(culprits) == len(table) and len(table) > 1:
        names = join(table["eval_set"].astype(str).tolist())
        incident.record(
            Finding(
                severity="warning",
                title=f"Every eval set dropped ({names}): a model-wide regression or an eval "
                "pipeline problem",
                subject={"service": incident.service},
                metric=accuracy.name,
            )
        )
    for index in culprits:
        row = table.iloc[index]
        eval_set = str(row["eval_set"])
        version = _serving_version(accuracy, eval_set)
        modality = _modality(accuracy, eval_set)
        rolled = _rollout_near(rollouts, version, since)
        subject = {"model_version": version, "eval_set": eval_set}
        if modality:
            subject["modality"] = modality
        when = f"from {since:%H:%M} UTC"
        rollout_text = f" on model {version}"
        if rolled is not None:
            minutes = abs((since - rolled).total_seconds()) / 60
            lead = f"{minutes:.0f} min after" if minutes >= 1 else "as"
            rollout_text = f", {lead} model {version} rolled out ({rolled:%H:%M} UTC)"
        delta = float(row["delta"])
        others = table.drop(index=culprits)["delta"]
        others_text = (
            f"; other eval sets within {_points(float(others.abs().max()), signed=False)}"
            if len(others)
            else ""
        )
        incident.record(
            Finding(
                severity="critical" if delta <= -CRITICAL_DROP else "warning",
                title=(
                    f"Accuracy on {eval_set}{f' ({modality})' if modality else ''} dropped "
                    f"{_points(abs(delta), signed=False)} "
                    f"({format_value(row['baseline'], 'ratio')} → "
                    f"{format_value(row['current'], 'ratio')}) {when}{rollout_text}"
                    f"{others_text}"
                ),
                subject=subject,
                metric=accuracy.name,
                observed=float(row["current"]),
                baseline=float(row["baseline"]),
                unit="ratio",
                recommendation=(
                    f"Roll back to the previous model version (from {version}) and re-run the "
                    f"{eval_set} eval; diff the {version} export (quantization, preprocessing "
                    f"for {modality or 'this modality'})."
                ),
                likely_cause=True,
            )
        )


def _rollout_near(rollouts: pd.DataFrame, version: str, since: pd.Timestamp) -> pd.Timestamp | None:
    if rollouts is None or rollouts.empty or "to" not in rollouts.columns:
        return None
    rows = rollouts[rollouts["to"] == version]
    if rows.empty:
        return None
    moment = rows["timestamp"].min()
    return moment if abs(moment - since) <= ROLLOUT_NEAR else None


def _points(delta: float, *, signed: bool = True) -> str:
    if not math.isfinite(delta):
        return "n/a"
    return f"{delta * 100:+.1f} points" if signed else f"{delta * 100:.1f} points"


def resolution(incident: Incident) -> None:
    resolution_steps(
        incident,
        quiet=(
            "A quiet run: accuracy on every eval set is within its own baseline. The alert may "
            "be noise, or the eval pipeline itself changed."
        ),
        fallback=(
            "Nothing here names a cause: check the eval job's input data and labels, and "
            "compare accuracy per client app version (the mobile runbooks)."
        ),
    )
