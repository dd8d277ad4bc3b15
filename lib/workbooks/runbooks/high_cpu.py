"""high-cpu: is it the load, a version, one instance, the quota, or a neighbour on the host?

Cells of ``notebooks/high-cpu.ipynb`` call these steps in order; each records findings. The
scope (service or host alert, which instances run on which node) is in
:mod:`workbooks.runbooks.high_cpu_scope`, the host and quota steps in
:mod:`workbooks.runbooks.high_cpu_host`. Thresholds are declared in :data:`THRESHOLDS`; a team
overrides them under ``runbooks: {high-cpu: {thresholds: ...}}``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.high_cpu_host import host, throttling
from workbooks.runbooks.high_cpu_limits import THRESHOLDS, capped, standouts
from workbooks.runbooks.high_cpu_scope import Scope, alert_scope, scope

__all__ = [
    "THRESHOLDS",
    "Scope",
    "alert_scope",
    "host",
    "load",
    "overview",
    "resolution",
    "scope",
    "still_happening",
    "throttling",
    "where",
]


def still_happening(incident: Incident, by_instance: QueryResult, node_busy: QueryResult) -> None:
    """Section 2: the service's CPU per instance and its hosts' busy share, last 10 minutes.

    The symptom is capped at warning: the cause found below carries the severity.
    """
    grade = capped(THRESHOLDS.of(incident).ladder("cpu_ratio"))
    recent = []
    checks = ((by_instance, "CPU", "cores"), (node_busy, "host CPU busy", "ratio"))
    for result, what, unit in checks:
        if result.empty or result.baseline is None or result.baseline.empty:
            continue
        found = steps.still_happening(
            incident, result, by="instance", severity=grade, what=what, unit=unit
        )
        if found is not None:
            recent.append(found)
    if recent:
        ongoing = [r for r in recent if r.ongoing]
        symptom = next(
            (f for f in reversed(incident.findings) if f.title.startswith("Still happening")),
            None,
        )
        steps.symptom(incident, ongoing=bool(ongoing), finding=symptom if ongoing else None)


def overview(
    incident: Incident,
    total: QueryResult,
    by_instance: QueryResult,
    node_modes: QueryResult,
) -> analysis.Onset | None:
    """The service's CPU by instance beside its hosts' CPU by mode; finds the onset."""
    onset = None
    if not total.empty:
        found = analysis.find_onset(total.series()[0])
        onset = found if found is not None and found.direction == "up" else None
    at = onset.at if onset is not None else None
    if not by_instance.empty:
        incident.timeseries(by_instance, by="instance", onset=at)
    if not node_modes.empty:
        incident.show(
            charts.timeseries(
                node_modes.current,
                baseline=node_modes.baseline,
                by=["instance", "mode"],
                title=incident.chart_title("Host CPU by mode (dashed: baseline)"),
                unit="cores",
                alert_start=pd.Timestamp(incident.starts_at),
                onset=at,
            )
        )
    when = f"from {at:%H:%M} UTC" if at is not None else "no clear onset in the service's CPU"
    steps.checked(incident, f"onset: {when}")
    return onset


def _since(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def where(
    incident: Incident,
    by_instance: QueryResult,
    per_request: QueryResult,
    versions: QueryResult,
    builds: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Which instances' CPU rose against their own baseline, and does it follow a version?

    A version (model or build) is named when the instances that took it are the ones whose CPU
    per request rose; an instance whose CPU rose on its own is a runaway.
    """
    limits = THRESHOLDS.of(incident)
    since = _since(incident, onset)
    cpu = _instances(incident, by_instance, since)
    cost = _instances(incident, per_request, since) if not per_request.empty else None
    changes = (cost or cpu).changes() if (cost or cpu) is not None else {}
    for result, label in ((versions, "model_version"), (builds, "version")):
        steps.correlate_rollouts(
            incident,
            result,
            changes,
            onset=onset.at if onset is not None else None,
            severity=limits.ladder("cpu_ratio"),
            label=label,
            min_change=limits["moved_ratio"],
            gap=limits["stands_out_gap"],
            what="CPU per request" if cost is not None else "CPU",
            recommendation=_rollback(incident, label),
        )
    if cpu is None:
        return
    if not cpu.culprits:
        spread = "spread across every instance" if cpu.spread else "no instance stands out"
        steps.checked(incident, f"CPU by instance: {spread}")
        return
    finding = steps.culprit_finding(
        incident,
        by_instance,
        cpu,
        what="CPU",
        unit="cores",
        severity=limits.ladder("cpu_ratio"),
        cause="instance",
        recommendation=(
            "Profile {values} while busy (py-spy dump --pid <pid>, or kubectl exec <pod> "
            "-- py-spy dump --pid 1), then restart {it} (kubectl delete pod {values})."
        ),
    )
    # Explained by a version named above: its fix is the rollback, not a restart.
    incident.record(finding if finding.cause else replace(finding, recommendation=None))


def _instances(
    incident: Incident, result: QueryResult, since: pd.Timestamp
) -> steps.Breakdown | None:
    limits = THRESHOLDS.of(incident)
    if result.empty or result.baseline is None or result.baseline.empty:
        steps.checked(incident, f"{result.title} by instance: no data or no baseline")
        return None
    table = analysis.top_contributors(result.current, result.baseline, by="instance", since=since)
    if result.unit == "cores":
        incident.show(
            charts.ranked_bars(
                table,
                label="instance",
                title=incident.chart_title(f"{result.title}: change against own baseline"),
            )
        )
    return standouts(
        table,
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        min_delta=limits["moved_cores"] if result.unit == "cores" else 0.0,
    )


def _rollback(incident: Incident, label: str) -> str:
    service = incident.service or "<service>"
    if label == "version":
        return (
            f"Roll back the build named here: kubectl rollout undo deployment/{service} "
            "(or pin the previous image), then watch CPU per request."
        )
    return (
        f"Roll back the model version named here on {service} (pin the previous model_version "
        "in its model config and restart the instances), then watch CPU per request."
    )


def load(
    incident: Incident,
    total: QueryResult,
    rate: QueryResult,
    per_request: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Load or cost: requests against their baseline, and CPU per request (flat under load)."""
    if total.empty or rate.empty:
        steps.checked(incident, "load: no CPU or request rate to compare")
        return
    limits = THRESHOLDS.of(incident)
    since = _since(incident, onset)
    incident.timeseries(rate, onset=since)
    if not per_request.empty:
        incident.timeseries(per_request, onset=since)
    cpu = total.compare(since=since)
    traffic = rate.compare(since=since)
    cost = per_request.compare(since=since) if not per_request.empty else None
    cost_ratio = cost.ratio if cost is not None else None
    text = (
        f"CPU {steps.ratio_text(cpu.ratio)}, requests {steps.ratio_text(traffic.ratio)}, "
        f"CPU per request {steps.ratio_text(cost_ratio)} their baseline"
    )
    steps.checked(incident, f"load: {text}")
    busy = (cpu.ratio or 0) >= limits["cpu_ratio_warning"]
    more = (traffic.ratio or 0) >= limits["traffic_ratio_warning"]
    flat = cost_ratio is not None and cost_ratio <= limits["per_request_flat"]
    if busy and more and flat:
        incident.record(_traffic_finding(incident, total, cpu, traffic, text))
        return
    incident.record(
        Finding(
            severity="info",
            title=f"Not a load problem: {text}"
            if not more
            else f"Requests rose but CPU per request rose too: {text}",
            subject={"service": incident.service or "*"},
            metric=rate.name,
            observed=traffic.current,
            baseline=traffic.baseline,
            unit="req/s",
        )
    )


def _traffic_finding(
    incident: Incident,
    total: QueryResult,
    cpu: analysis.Comparison,
    traffic: analysis.Comparison,
    text: str,
) -> Finding:
    limits = THRESHOLDS.of(incident)
    instances = int(total.current.get("instance", pd.Series(dtype=str)).nunique()) or None
    service = incident.service or "<service>"
    replicas = f" --replicas={math.ceil((instances or 1) * (cpu.ratio or 1))}" if instances else ""
    severity: Severity = limits.severity(cpu.ratio, "cpu_ratio")
    return Finding(
        severity=severity,
        title=(
            f"Load: requests rose {steps.ratio_text(traffic.ratio)} "
            f"({steps.change_text(traffic.current, traffic.baseline, None)} req/s) and CPU "
            f"followed ({steps.change_text(cpu.current, cpu.baseline, 'cores')}); CPU per "
            "request is flat"
        ),
        detail=text,
        subject={"service": incident.service or "*"},
        metric=total.name,
        observed=cpu.current,
        baseline=cpu.baseline,
        unit="cores",
        recommendation=(
            f"Scale out: kubectl scale deployment/{service}{replicas} (or raise the "
            "autoscaler's maximum); then check where the extra traffic comes from "
            "(the anomalous-traffic runbook)."
        ),
        cause="traffic",
    )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: the service's CPU and its hosts' CPU are within their baselines on "
            "every instance and node, nothing is throttled, and no version or load change "
            "stands out. The alert's threshold may be too tight."
        ),
        next_steps=[
            "Widen the window (`lookback='6h'`) and compare with a week ago (`baseline='7d'`).",
            "Look at the hosts directly: `top -o %CPU` or `kubectl top pods -A` on the node.",
            "Check the request mix (large inputs cost more CPU) and garbage collection.",
        ],
    )
