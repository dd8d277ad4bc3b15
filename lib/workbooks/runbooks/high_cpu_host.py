"""high-cpu: throttling at the CPU quota, and the hosts: busy with the service or with others.

A neighbour is told apart by subtraction: a host's busy cores minus the service's own CPU on it
(``high_cpu_node_others``). When that rises while the service's own CPU does not, something
else on the host takes the CPU.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import Finding, format_value
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
    others: QueryResult,
    onset: analysis.Onset | None = None,
) -> None:
    """Hosts busier with work that is not the service: a neighbour (or the node's own daemons)."""
    if others.empty or others.baseline is None or others.baseline.empty:
        steps.checked(incident, "hosts: no node_exporter data for the service's nodes")
        return
    limits = THRESHOLDS.of(incident)
    incident.timeseries(others, by="instance", onset=_start(incident, onset))
    if not node_busy.empty:
        incident.timeseries(node_busy, by="instance", onset=_start(incident, onset))
    since = pd.Timestamp(incident.starts_at)
    table = analysis.top_contributors(others.current, others.baseline, by="instance", since=since)
    table = table.sort_values("delta", ascending=False, kind="stable")
    busy = table[table["delta"] >= limits["neighbour_cores_warning"]]
    shares = _last_by_instance(node_busy)
    if busy.empty:
        top = table.iloc[0]
        steps.checked(
            incident,
            f"hosts: no host is busier with other work (largest rise {top['instance']}, "
            f"{format_value(float(top['delta']), 'cores')})",
        )
        incident.record(
            Finding(
                severity="info",
                title="No host is busier with other work than the service: not a neighbour "
                f"(largest rise {format_value(float(top['delta']), 'cores')} on {top['instance']})",
                subject={"instance": str(top["instance"])},
                metric=others.name,
            )
        )
        return
    for _, row in busy.iterrows():
        incident.record(_neighbour_finding(incident, row, shares, others.name))


def _neighbour_finding(
    incident: Incident, row: pd.Series, shares: dict[str, float], metric: str
) -> Finding:
    limits = THRESHOLDS.of(incident)
    node = str(row["instance"])
    share = shares.get(node)
    busy = f", the host {share:.0%} busy" if share is not None else ""
    severity = limits.severity(float(row["delta"]), "neighbour_cores")
    return Finding(
        severity=severity,
        title=(
            f"Host {node} is busy with something else: other processes use "
            f"{format_value(float(row['delta']), 'cores')} more than in its baseline "
            f"({steps.change_text(float(row['current']), float(row['baseline']), 'cores')}"
            f"{busy}), while the service's own CPU there is not what rose"
        ),
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
