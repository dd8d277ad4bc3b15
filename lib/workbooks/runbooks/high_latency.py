"""high-latency: is it still slow, how much, since when, what changed, where, and why.

Cells of ``notebooks/high-latency.ipynb`` call these steps in order; each records findings.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks.common import (
    change_text,
    concentrated,
    join,
    ratio_text,
    resolution_steps,
    severity_for_ratio,
)

# A rollout this close before the onset (or the alert, when no onset is found) is a suspect.
ROLLOUT_SUSPECT_BEFORE = timedelta(minutes=20)
RECENT = timedelta(minutes=10)


def _since(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def still_happening(incident: Incident, p99: QueryResult, by_route: QueryResult) -> None:
    """Immediate check: p99 over the last 10 minutes, overall and per route, against baseline."""
    tail = pd.Timedelta(RECENT)
    worst_route, worst = None, None
    if not by_route.empty and by_route.baseline is not None and not by_route.baseline.empty:
        table = analysis.top_contributors(
            by_route.current,
            by_route.baseline,
            by="route",
            since=pd.Timestamp(incident.window.end) - tail,
        ).dropna(subset=["ratio"])
        if len(table):
            worst_route, worst = str(table["route"].iloc[0]), table.iloc[0]
    overall = None
    if not p99.empty:
        overall = p99.compare(tail=tail)
    if worst is not None and float(worst["ratio"]) >= (overall.ratio or 0 if overall else 0):
        ratio, current, baseline_value = float(worst["ratio"]), worst["current"], worst["baseline"]
        subject, what = {"route": worst_route}, f"p99 of {worst_route}"
    elif overall is not None:
        ratio, current, baseline_value = overall.ratio, overall.current, overall.baseline
        subject, what = {"service": incident.service}, "p99 latency"
    else:
        return
    severity = severity_for_ratio(ratio)
    if severity == "info":
        title = (
            f"Not slow now: over the last 10 min every route's p99 is within its baseline "
            f"(worst {what}, {ratio_text(ratio)}: "
            f"{change_text(current, baseline_value, 'seconds')})"
        )
    else:
        title = (
            f"Still happening: {what} is {ratio_text(ratio)} its baseline over the last 10 min "
            f"({change_text(current, baseline_value, 'seconds')})"
        )
    incident.record(
        Finding(
            severity=severity,
            title=title,
            subject=subject,
            metric=by_route.name if "route" in subject else p99.name,
            observed=current,
            baseline=baseline_value,
            unit="seconds",
        )
    )


def overview(
    incident: Incident, p50: QueryResult, p90: QueryResult, p99: QueryResult
) -> analysis.Onset | None:
    """p50/p90/p99 against the baseline; finds when the slowdown began."""
    frames = []
    baselines = []
    for label, result in (("p50", p50), ("p90", p90), ("p99", p99)):
        if result.empty:
            continue
        frames.append(result.current.assign(quantile=label))
        if result.baseline is not None and not result.baseline.empty:
            baselines.append(result.baseline.assign(quantile=label))
    if p99.empty:
        return None
    series, _ = p99.series()
    onset = analysis.find_onset(series)
    if onset is not None and onset.direction != "up":
        onset = None
    incident.show(
        charts.timeseries(
            pd.concat(frames, ignore_index=True),
            baseline=pd.concat(baselines, ignore_index=True) if baselines else None,
            by="quantile",
            title=incident.chart_title("Latency p50 / p90 / p99 (dashed: baseline)"),
            unit="seconds",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=onset.at if onset else None,
        )
    )
    since = _since(incident, onset)
    change = p99.compare(since=since)
    severity = severity_for_ratio(change.ratio)
    if severity == "info":
        incident.record(
            Finding(
                severity="info",
                title=(
                    f"Service-wide p99 is {ratio_text(change.ratio)} its baseline "
                    f"({change_text(change.current, change.baseline, 'seconds')}); a slowdown, "
                    "if any, is in part of the traffic (section 3.3)"
                ),
                subject={"service": incident.service},
                metric=p99.name,
                observed=change.current,
                baseline=change.baseline,
                unit="seconds",
            )
        )
        return onset
    when = f" from {onset.at:%H:%M} UTC" if onset else " since the alert"
    lead = ""
    if onset is not None:
        minutes = (pd.Timestamp(incident.starts_at) - onset.at).total_seconds() / 60
        lead = f" ({minutes:.0f} min before the alert fired)" if minutes >= 1 else ""
    incident.record(
        Finding(
            severity=severity,
            title=(
                f"p99 latency rose {ratio_text(change.ratio)} over its baseline "
                f"({change_text(change.current, change.baseline, 'seconds')}){when}{lead}"
            ),
            subject={"service": incident.service},
            metric=p99.name,
            observed=change.current,
            baseline=change.baseline,
            unit="seconds",
        )
    )
    return onset


def _running_versions(versions: QueryResult) -> dict[str, str]:
    """instance -> the model version it runs at the end of the window."""
    if versions.empty:
        return {}
    frame = versions.current
    last = frame[frame["timestamp"] == frame["timestamp"].max()]
    return dict(zip(last["instance"], last["model_version"], strict=False))


def what_changed(
    incident: Incident,
    versions: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Model rollouts near the onset, and whether the slowdown follows the new version."""
    rollouts = (
        analysis.changes(versions.current, label="model_version")
        if not versions.empty
        else pd.DataFrame()
    )
    if not by_instance.empty:
        incident.show(
            charts.timeseries(
                by_instance.current,
                baseline=by_instance.baseline,
                by="instance",
                title=incident.chart_title("p99 latency by instance, with model rollouts"),
                unit="seconds",
                alert_start=pd.Timestamp(incident.starts_at),
                onset=onset.at if onset else None,
                markers=rollouts if len(rollouts) else None,
            )
        )
    if rollouts.empty:
        incident.record(
            Finding(
                severity="info",
                title="No model version changed in the window",
                subject={"service": incident.service},
                metric=versions.name,
                recommendation="Look at other changes: config, dependencies, traffic.",
            )
        )
        return
    since = _since(incident, onset)
    table = (
        analysis.top_contributors(
            by_instance.current, by_instance.baseline, by="instance", since=since
        )
        if not by_instance.empty and by_instance.baseline is not None
        else pd.DataFrame(columns=["instance", "ratio"])
    )
    ratios = dict(zip(table["instance"], table["ratio"], strict=False))
    running = _running_versions(versions)
    for version, group in rollouts.groupby("to"):
        rolled_at = group["timestamp"].min()
        on_new = sorted(instance for instance, v in running.items() if v == version)
        on_old = sorted(instance for instance, v in running.items() if v != version)
        new_ratio = _median(ratios.get(i) for i in on_new)
        old_ratio = _median(ratios.get(i) for i in on_old)
        near_onset = rolled_at >= since - ROLLOUT_SUSPECT_BEFORE and rolled_at <= since + RECENT
        follows = (
            new_ratio is not None
            and new_ratio >= 1.5
            and (old_ratio is None or new_ratio >= 1.4 * old_ratio)
        )
        share = f"{len(on_new)} of {len(running)} instances"
        if follows:
            severity = severity_for_ratio(new_ratio)
            others = f", {ratio_text(old_ratio)} on the others ({join(on_old)})" if on_old else ""
            incident.record(
                Finding(
                    severity=severity,
                    title=(
                        f"The slowdown follows model {version}: p99 on its instances rose "
                        f"{ratio_text(new_ratio)}{others}; {version} rolled out at "
                        f"{rolled_at:%H:%M} UTC on {share}"
                    ),
                    subject={"model_version": str(version), "instance": join(on_new)},
                    metric=by_instance.name,
                    observed=new_ratio,
                    baseline=1.0,
                    unit="x",
                    recommendation=f"Roll back model {version} (e.g. `kubectl rollout undo` or "
                    f"your model registry's pin to the previous version) and watch p99.",
                    likely_cause=True,
                )
            )
        elif near_onset and not on_old and (new_ratio or 0) >= 1.5:
            incident.record(
                Finding(
                    severity=severity_for_ratio(new_ratio),
                    title=(
                        f"Model {version} rolled out on every instance at {rolled_at:%H:%M} UTC, "
                        f"just before the slowdown ({ratio_text(new_ratio)})"
                    ),
                    subject={"model_version": str(version)},
                    metric=versions.name,
                    recommendation=f"Roll back model {version} and watch p99.",
                    likely_cause=True,
                )
            )
        else:
            incident.record(
                Finding(
                    severity="info",
                    title=(
                        f"Model {version} rolled out at {rolled_at:%H:%M} UTC on {share}, but "
                        f"the slowdown does not follow it ({ratio_text(new_ratio)} on its "
                        f"instances, {ratio_text(old_ratio)} elsewhere)"
                    ),
                    subject={"model_version": str(version)},
                    metric=versions.name,
                )
            )


def _median(values: object) -> float | None:
    numbers = pd.Series([v for v in values if v is not None], dtype=float).dropna()  # type: ignore[attr-defined]
    return float(numbers.median()) if len(numbers) else None


def where(
    incident: Incident,
    by_route: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Which routes and instances slowed down, each against its own baseline."""
    since = _since(incident, onset)
    for result, label in ((by_route, "route"), (by_instance, "instance")):
        if result.empty or result.baseline is None or result.baseline.empty:
            continue
        table = analysis.top_contributors(result.current, result.baseline, by=label, since=since)
        culprits = concentrated(table, by=label)
        incident.show(
            charts.ranked_bars(
                table,
                label=label,
                title=incident.chart_title(f"p99 latency by {label}: change against own baseline"),
                highlight=culprits.values[0] if culprits else None,
            )
        )
        if culprits is None:
            top = table.dropna(subset=["ratio"]).head(1)
            if len(top) and float(top["ratio"].iloc[0]) >= 1.5:
                detail = (
                    f"every {label} rose alike (top: {top[label].iloc[0]} at "
                    f"{ratio_text(float(top['ratio'].iloc[0]))})"
                )
                incident.record(
                    Finding(
                        severity="info",
                        title=f"Not one {label}: the slowdown is spread across {label}s",
                        detail=detail,
                        subject={label: "*"},
                        metric=result.name,
                    )
                )
            continue
        rows = table[table[label].isin(culprits.values)]
        culprit_onset = analysis.find_onset(
            analysis.series_of(result.current, **{label: culprits.values[0]})
        )
        when = (
            f" from {culprit_onset.at:%H:%M} UTC"
            if culprit_onset is not None and culprit_onset.direction == "up"
            else ""
        )
        current = float(rows["current"].max())
        baseline = float(rows.loc[rows["current"].idxmax(), "baseline"])
        # A culprit instance that a version rollout explains is reported by what_changed.
        explained = label == "instance" and any(
            finding.likely_cause
            and "instance" in finding.subject
            and set(finding.subject["instance"].split(", ")) == set(culprits.values)
            for finding in incident.findings
        )
        severity = severity_for_ratio(culprits.ratio)
        incident.record(
            Finding(
                severity=severity if not explained else "warning",
                title=(
                    f"p99 of {label}{'s' if len(culprits.values) > 1 else ''} "
                    f"{join(culprits.values)} rose {ratio_text(culprits.ratio)} over "
                    f"{'their' if len(culprits.values) > 1 else 'its'} baseline "
                    f"({change_text(current, baseline, 'seconds')}){when}; other "
                    f"{label}s {ratio_text(culprits.others_ratio)}"
                    + (" (the rollout above)" if explained else "")
                ),
                subject={label: join(culprits.values)},
                metric=result.name,
                observed=current,
                baseline=baseline,
                unit="seconds",
                recommendation=(
                    f"Drain {join(culprits.values)} and replace it; compare its host metrics."
                    if label == "instance"
                    else f"Look at what {join(culprits.values)} calls (model, preprocessing, "
                    "downstream store) and at recent changes to it."
                ),
                likely_cause=not explained,
            )
        )


def load_and_saturation(
    incident: Incident,
    rate: QueryResult,
    errors: QueryResult,
    cpu: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Traffic against its baseline, CPU per instance, and errors beside latency."""
    since = _since(incident, onset)
    if not rate.empty:
        incident.timeseries(rate, onset=onset.at if onset else None)
        change = rate.compare(since=since)
        if change.ratio is not None and change.ratio >= 1.5:
            incident.record(
                Finding(
                    severity="warning",
                    title=(
                        f"Traffic is {ratio_text(change.ratio)} its baseline "
                        f"({change_text(change.current, change.baseline, None)} req/s): load "
                        "may explain the slowdown"
                    ),
                    subject={"service": incident.service},
                    metric=rate.name,
                    observed=change.current,
                    baseline=change.baseline,
                    unit="req/s",
                    recommendation="Scale out if CPU is saturated; check for a traffic anomaly "
                    "(the anomalous-traffic runbook).",
                )
            )
        else:
            incident.record(
                Finding(
                    severity="info",
                    title=f"Traffic is normal ({ratio_text(change.ratio)} its baseline): not a "
                    "load problem",
                    subject={"service": incident.service},
                    metric=rate.name,
                    observed=change.current,
                    baseline=change.baseline,
                    unit="req/s",
                )
            )
    if not cpu.empty:
        incident.timeseries(cpu, by="instance", onset=onset.at if onset else None)
        table = (
            analysis.top_contributors(cpu.current, cpu.baseline, by="instance", since=since)
            if cpu.baseline is not None and not cpu.baseline.empty
            else None
        )
        if table is not None and len(table.dropna(subset=["ratio"])):
            top = table.dropna(subset=["ratio"]).iloc[0]
            if float(top["ratio"]) >= 1.5:
                incident.record(
                    Finding(
                        severity="warning",
                        title=(
                            f"CPU on {top['instance']} is {ratio_text(float(top['ratio']))} its "
                            f"baseline ({format_value(float(top['current']), 'cores')})"
                        ),
                        subject={"instance": str(top["instance"])},
                        metric=cpu.name,
                        observed=float(top["current"]),
                        baseline=float(top["baseline"]),
                        unit="cores",
                    )
                )
    if not errors.empty:
        incident.timeseries(errors, onset=onset.at if onset else None)
        change = errors.compare(since=since)
        if change.current is not None and change.current >= 0.01 and (change.ratio or 0) >= 2:
            incident.record(
                Finding(
                    severity="warning",
                    title=f"Errors rose beside latency: {format_value(change.current, 'ratio')} "
                    f"of requests fail ({ratio_text(change.ratio)} baseline); timeouts often "
                    "show as 5xx",
                    subject={"service": incident.service},
                    metric=errors.name,
                    observed=change.current,
                    baseline=change.baseline,
                    unit="ratio",
                    recommendation="Open the high-error-rate workbook for this service.",
                )
            )


def resolution(incident: Incident) -> None:
    """Section 4: the steps that fit what was found."""
    resolution_steps(
        incident,
        quiet=(
            "A quiet run: p99 overall and on every route and instance is within its baseline, "
            "and no model version or traffic change stands out. The alert's threshold may be "
            "too tight for this service's normal latency."
        ),
        fallback=(
            "Nothing here names a cause: widen the window (`lookback='6h'`), check dependencies "
            "(database, model store), and look at the request mix per route."
        ),
    )
