"""high-latency: is it still slow, how much, since when, what changed, where, and why.

Cells of ``notebooks/high-latency.ipynb`` call these steps in order; each records findings.
The judgement is the shared steps' (:mod:`workbooks.runbooks.steps`), with this runbook's
thresholds, which a team can override under ``runbooks: {high-latency: {thresholds: ...}}``.
"""

from __future__ import annotations

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "high-latency",
    # p99 against its baseline: at least this many times is critical / a warning.
    latency_ratio_critical=2.0,
    latency_ratio_warning=1.3,
    # A route or instance "moved" at this ratio; culprits stand this far above the next one.
    moved_ratio=1.5,
    stands_out_gap=1.4,
    # Load and saturation beside latency.
    traffic_ratio_warning=1.5,
    cpu_ratio_warning=1.5,
    error_share_warning=0.01,
    error_ratio_warning=2.0,
)


def _since(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def still_happening(incident: Incident, p99: QueryResult, by_route: QueryResult) -> None:
    """Immediate check: p99 over the last 10 minutes, worst route (or overall), against baseline."""
    grade = THRESHOLDS.of(incident).ladder("latency_ratio")
    recent = None
    if not by_route.empty and by_route.baseline is not None and not by_route.baseline.empty:
        recent = steps.still_happening(
            incident, by_route, by="route", severity=grade, what="p99", unit="seconds"
        )
    if recent is None:
        steps.still_happening(incident, p99, severity=grade, what="p99 latency", unit="seconds")


def overview(
    incident: Incident, p50: QueryResult, p90: QueryResult, p99: QueryResult
) -> analysis.Onset | None:
    """p50/p90/p99 against the baseline; finds when the slowdown began."""
    if p99.empty:
        return None
    present = [(label, r) for label, r in (("p50", p50), ("p90", p90), ("p99", p99)) if not r.empty]
    frames = [r.current.assign(quantile=label) for label, r in present]
    baselines = [
        r.baseline.assign(quantile=label)
        for label, r in present
        if r.baseline is not None and not r.baseline.empty
    ]
    onset = analysis.find_onset(p99.series()[0])
    onset = onset if onset is not None and onset.direction == "up" else None
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
    _record_overall(incident, p99, onset)
    return onset


def _record_overall(incident: Incident, p99: QueryResult, onset: analysis.Onset | None) -> None:
    change = p99.compare(since=_since(incident, onset))
    severity = THRESHOLDS.of(incident).severity(change.ratio, "latency_ratio")
    numbers = steps.change_text(change.current, change.baseline, "seconds")
    if severity == "info":
        title = (
            f"Service-wide p99 is {steps.ratio_text(change.ratio)} its baseline ({numbers}); a "
            "slowdown, if any, is in part of the traffic (section 3.3)"
        )
    else:
        when = f" from {onset.at:%H:%M} UTC" if onset else " since the alert"
        lead = ""
        if onset is not None:
            minutes = (pd.Timestamp(incident.starts_at) - onset.at).total_seconds() / 60
            lead = f" ({minutes:.0f} min before the alert fired)" if minutes >= 1 else ""
        title = (
            f"p99 latency rose {steps.ratio_text(change.ratio)} over its baseline "
            f"({numbers}){when}{lead}"
        )
    steps.checked(incident, f"service-wide p99: {steps.ratio_text(change.ratio)} ({numbers})")
    incident.record(
        Finding(
            severity=severity,
            title=title,
            subject={"service": incident.service},
            metric=p99.name,
            observed=change.current,
            baseline=change.baseline,
            unit="seconds",
        )
    )


def what_changed(
    incident: Incident,
    versions: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Model rollouts near the onset, and whether the slowdown follows the new version."""
    limits = THRESHOLDS.of(incident)
    markers = (
        analysis.changes(versions.current, label="model_version") if not versions.empty else None
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
                markers=markers if markers is not None and len(markers) else None,
            )
        )
    instances = steps.breakdown(
        incident,
        by_instance,
        by="instance",
        since=_since(incident, onset),
        severity=limits.ladder("latency_ratio"),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        chart=False,
        record=False,
    )
    steps.correlate_rollouts(
        incident,
        versions,
        instances.changes() if instances is not None else {},
        onset=onset.at if onset is not None else None,
        severity=limits.ladder("latency_ratio"),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what="the slowdown",
        unit="seconds",
    )


def where(
    incident: Incident,
    by_route: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Which routes and instances slowed down, each against its own baseline."""
    limits = THRESHOLDS.of(incident)
    for result, label, cause, recommendation in (
        (
            by_route,
            "route",
            "dependency",
            "Look at the model, preprocessing and downstream stores behind {values}, and at "
            "recent changes to {it}.",
        ),
        (
            by_instance,
            "instance",
            "instance",
            "Drain {values} and replace {it}; compare {its} host metrics with the others'.",
        ),
    ):
        steps.breakdown(
            incident,
            result,
            by=label,
            since=_since(incident, onset),
            severity=limits.ladder("latency_ratio"),
            min_change=limits["moved_ratio"],
            gap=limits["stands_out_gap"],
            what="p99",
            unit="seconds",
            cause=cause,
            recommendation=recommendation,
        )


def load_and_saturation(
    incident: Incident,
    rate: QueryResult,
    errors: QueryResult,
    cpu: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Traffic against its baseline, CPU per instance, and errors beside latency."""
    if not rate.empty:
        incident.timeseries(rate, onset=onset.at if onset else None)
        _traffic(incident, rate, _since(incident, onset))
    if not cpu.empty:
        incident.timeseries(cpu, by="instance", onset=onset.at if onset else None)
        _cpu(incident, cpu, _since(incident, onset))
    if not errors.empty:
        incident.timeseries(errors, onset=onset.at if onset else None)
        _errors(incident, errors, _since(incident, onset))


def _traffic(incident: Incident, rate: QueryResult, since: pd.Timestamp) -> None:
    change = rate.compare(since=since)
    numbers = steps.change_text(change.current, change.baseline, None)
    busy = (
        change.ratio is not None
        and change.ratio >= THRESHOLDS.of(incident)["traffic_ratio_warning"]
    )
    steps.checked(incident, f"traffic: {steps.ratio_text(change.ratio)} its baseline")
    incident.record(
        Finding(
            severity="warning" if busy else "info",
            title=(
                f"Traffic is {steps.ratio_text(change.ratio)} its baseline ({numbers} req/s): "
                "load may explain the slowdown"
                if busy
                else f"Traffic is normal ({steps.ratio_text(change.ratio)} its baseline): not a "
                "load problem"
            ),
            subject={"service": incident.service},
            metric=rate.name,
            observed=change.current,
            baseline=change.baseline,
            unit="req/s",
            recommendation="Scale out if CPU is saturated; check for a traffic anomaly "
            "(the anomalous-traffic runbook)."
            if busy
            else None,
            cause="traffic" if busy else None,
        )
    )


def _cpu(incident: Incident, cpu: QueryResult, since: pd.Timestamp) -> None:
    if cpu.baseline is None or cpu.baseline.empty:
        return
    table = analysis.top_contributors(cpu.current, cpu.baseline, by="instance", since=since)
    table = table.dropna(subset=["ratio"])
    if not len(table):
        return
    top = table.iloc[0]
    steps.checked(
        incident, f"CPU: highest {top['instance']} at {steps.ratio_text(top['ratio'])} baseline"
    )
    if float(top["ratio"]) >= THRESHOLDS.of(incident)["cpu_ratio_warning"]:
        incident.record(
            Finding(
                severity="warning",
                title=(
                    f"CPU on {top['instance']} is {steps.ratio_text(float(top['ratio']))} its "
                    f"baseline ({format_value(float(top['current']), 'cores')})"
                ),
                subject={"instance": str(top["instance"])},
                metric=cpu.name,
                observed=float(top["current"]),
                baseline=float(top["baseline"]),
                unit="cores",
            )
        )


def _errors(incident: Incident, errors: QueryResult, since: pd.Timestamp) -> None:
    limits = THRESHOLDS.of(incident)
    change = errors.compare(since=since)
    steps.checked(incident, f"errors: {format_value(change.current, 'ratio')} of requests")
    if (
        change.current is not None
        and change.current >= limits["error_share_warning"]
        and (change.ratio or 0) >= limits["error_ratio_warning"]
    ):
        incident.record(
            Finding(
                severity="warning",
                title=f"Errors rose beside latency: {format_value(change.current, 'ratio')} "
                f"of requests fail ({steps.ratio_text(change.ratio)} baseline); timeouts often "
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
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: p99 overall and on every route and instance is within its baseline, "
            "and no model version or traffic change stands out. The alert's threshold may be "
            "too tight for this service's normal latency."
        ),
        next_steps=[
            "Widen the window (`lookback='6h'`) and compare with a week ago (`baseline='7d'`).",
            "Check dependencies (database, model store, downstream APIs) for the same window.",
            "Look at the request mix per route and per client.",
        ],
    )
