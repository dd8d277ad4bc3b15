"""high-cpu: throttling at the CPU quota, and the hosts: busy with the service or with others.

A neighbour is told apart by subtraction: a host's busy cores minus the service's own CPU on it
(``high_cpu_node_others``). When that rises while the service's own CPU does not, something
else on the host takes the CPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import SEVERITIES, Finding, Severity, format_value
from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.high_cpu_limits import THRESHOLDS, standouts


def _start(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def throttling(
    incident: Incident,
    throttled: QueryResult,
    quota: QueryResult,
    onset: analysis.Onset | None = None,
) -> None:
    """Instances throttled at their CPU quota (CFS), against their own baseline."""
    if throttled.empty or throttled.baseline is None or throttled.baseline.empty:
        steps.checked(incident, "throttling: no cAdvisor CFS data to compare")
        return
    limits = THRESHOLDS.of(incident)
    incident.timeseries(throttled, by="instance", onset=_start(incident, onset))
    table = analysis.top_contributors(
        throttled.current, throttled.baseline, by="instance", since=_start(incident, onset)
    )
    found = standouts(
        table,
        min_change=limits["throttled_change_warning"],
        gap=1.4,
        measure="delta",
    )
    if not found.culprits:
        top = found.table.iloc[0] if len(found.table) else None
        worst = (
            f"; most throttled {top['instance']} at {format_value(float(top['current']), 'ratio')}"
            if top is not None
            else ""
        )
        steps.checked(incident, f"throttling: no instance newly throttled{worst}")
        return
    quotas = _last_by_instance(quota)
    lowered = _lowered(quota, found.culprits)
    # Throttled because its CPU rose to an unchanged quota, with that rise explained above
    # (load, a version, a runaway): the throttling is a consequence, not the cause.
    consequence = not lowered and any(f.cause is not None for f in incident.findings)
    finding = steps.culprit_finding(
        incident,
        throttled,
        found,
        what="share of CPU periods throttled",
        unit="ratio",
        severity=limits.ladder("throttled_change"),
        cause=None if consequence else "limit",
        recommendation=None
        if consequence
        else _raise_quota(incident, found.culprits, quotas, lowered),
    )
    if consequence:
        finding = replace(
            finding,
            severity="warning",
            title=finding.title + ": its CPU rose to its unchanged quota, a consequence of "
            "the cause above",
        )
    incident.record(finding)


def _lowered(quota: QueryResult, instances: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """instance -> (limit before, limit now) for the instances whose CPU limit was lowered."""
    if quota.empty or quota.baseline is None or quota.baseline.empty:
        return {}
    now = _last_by_instance(quota)
    frame = quota.baseline.sort_values("timestamp")
    before = {str(k): float(v) for k, v in frame.groupby("instance")["value"].first().items()}
    first = quota.current.sort_values("timestamp").groupby("instance")["value"].first()
    before.update({str(k): max(float(v), before.get(str(k), 0.0)) for k, v in first.items()})
    return {
        i: (before[i], now[i])
        for i in instances
        if i in now and i in before and now[i] < 0.95 * before[i]
    }


def _raise_quota(
    incident: Incident,
    instances: tuple[str, ...],
    quotas: dict[str, float],
    lowered: dict[str, tuple[float, float]],
) -> str:
    service = incident.service or "<deployment>"
    if lowered:
        before, now = max(b for b, _ in lowered.values()), min(n for _, n in lowered.values())
        return (
            f"The CPU limit of {steps.join(sorted(lowered))} was lowered from {before:g} to "
            f"{now:g} cores in the window: restore it (kubectl set resources "
            f"deployment/{service} --limits=cpu={before:g}) and revert the config change."
        )
    known = [quotas[i] for i in instances if i in quotas and math.isfinite(quotas[i])]
    if known:
        now = min(known)
        # Double it: throttled this much, the process wants well over its quota.
        target = math.ceil(now * 2 * 10) / 10
        return (
            f"Its CPU rose to its unchanged limit ({now:g} cores): raise it (kubectl set "
            f"resources deployment/{service} --limits=cpu={target:g}) and find out why it needs "
            "more (a CPU profile of the instance)."
        )
    return (
        f"Raise the CPU limit of {steps.join(instances)}: kubectl set resources "
        f"deployment/{service} --limits=cpu=<higher>."
    )


def _last_by_instance(result: QueryResult) -> dict[str, float]:
    if result.empty:
        return {}
    frame = result.current.sort_values("timestamp")
    return {str(k): float(v) for k, v in frame.groupby("instance")["value"].last().items()}


def host(
    incident: Incident,
    node_busy: QueryResult,
    node_modes: QueryResult,
    others: QueryResult,
    onset: analysis.Onset | None = None,
) -> None:
    """Hosts busy with work that is not the service: a neighbour (or the node's own daemons).

    A host is named when the CPU used by others rose against its baseline, or when it is busy
    now and mostly not with the service (a host saturated by others all along).
    """
    if others.empty:
        steps.checked(incident, "hosts: no node_exporter data for the service's nodes")
        return
    incident.timeseries(others, by="instance", onset=_start(incident, onset))
    if not node_busy.empty:
        incident.timeseries(node_busy, by="instance", onset=_start(incident, onset))
    since = pd.Timestamp(incident.starts_at)
    table = analysis.top_contributors(others.current, others.baseline, by="instance", since=since)
    busy_cores = _busy_cores(node_modes, since)
    shares = _last_by_instance(node_busy)
    named = [
        (row, grade)
        for _, row in table.sort_values("delta", ascending=False, kind="stable").iterrows()
        if (grade := _neighbour_grade(incident, row, busy_cores, shares)) != "info"
    ]
    if not named:
        top = table.sort_values("delta", ascending=False, kind="stable").iloc[0]
        change = float(top["delta"]) if math.isfinite(float(top["delta"])) else 0.0
        steps.checked(
            incident,
            f"hosts: none is busy with other work (largest change in others' CPU "
            f"{change:+.2f} cores, on {top['instance']})",
        )
        incident.record(
            Finding(
                severity="info",
                title="No host is busy with other work than the service: not a neighbour "
                f"(largest change {change:+.2f} cores, on {top['instance']})",
                subject={"instance": str(top["instance"])},
                metric=others.name,
            )
        )
        return
    for row, grade in named:
        incident.record(_neighbour_finding(row, grade, shares, others.name))


def _busy_cores(node_modes: QueryResult, since: pd.Timestamp) -> dict[str, float]:
    if node_modes.empty:
        return {}
    stamps = pd.to_datetime(node_modes.current["timestamp"], utc=True)
    start = since.tz_localize("UTC") if since.tzinfo is None else since
    frame = node_modes.current[(stamps >= start).to_numpy()]
    per_time = frame.groupby(["instance", "timestamp"])["value"].sum()
    return {str(k): float(v) for k, v in per_time.groupby(level="instance").median().items()}


def _neighbour_grade(
    incident: Incident, row: pd.Series, busy_cores: dict[str, float], shares: dict[str, float]
) -> Severity:
    limits = THRESHOLDS.of(incident)
    node = str(row["instance"])
    delta = float(row["delta"]) if math.isfinite(float(row["delta"])) else 0.0
    risen = limits.severity(delta, "neighbour_cores")
    busy = busy_cores.get(node)
    mostly_others = bool(busy) and float(row["current"]) >= limits["others_share"] * busy
    saturated = limits.severity(shares.get(node), "node_busy") if mostly_others else "info"
    return min(risen, saturated, key=SEVERITIES.index)


def _neighbour_finding(
    row: pd.Series, severity: Severity, shares: dict[str, float], metric: str
) -> Finding:
    node = str(row["instance"])
    share = shares.get(node)
    busy = f"; the host is {share:.0%} busy" if share is not None else ""
    numbers = steps.change_text(float(row["current"]), float(row["baseline"]), "cores")
    others = format_value(float(row["current"]), "cores")
    if float(row["delta"]) > 0.1 * max(float(row["baseline"]), 1.0):
        title = (
            f"Host {node} is busy with something else: processes other than the service use "
            f"{others} ({numbers} against its baseline{busy}), and the service's own CPU is "
            "not what rose"
        )
    else:
        title = (
            f"Host {node} is busy mostly with something else, as in its baseline: processes "
            f"other than the service use {others} ({numbers}{busy})"
        )
    return Finding(
        severity=severity,
        title=title,
        detail="Host busy cores (node_cpu_seconds_total, every mode but idle) minus the "
        "service's process CPU on that host.",
        subject={"instance": node},
        metric=metric,
        observed=float(row["current"]),
        baseline=float(row["baseline"]),
        unit="cores",
        recommendation=(
            f"Find the process on {node}: `top -o %CPU` there, or kubectl top pods -A "
            f"--field-selector spec.nodeName={node}. Stop or move it; or move the service off: "
            f"kubectl cordon {node} and delete the service's pod there."
        ),
        cause="instance",
    )
