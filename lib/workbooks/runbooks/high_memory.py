"""high-memory: how close each instance is to its limit, leak or step, and who is responsible.

Cells of ``notebooks/high-memory.ipynb`` call these steps in order; each records findings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks.common import join, resolution_steps

GIB = 1024**3
# A steady growth this fast (bytes per hour) is a leak worth a finding.
LEAK_BYTES_PER_HOUR = 0.25 * GIB
# A step up this large (bytes) is worth a finding.
STEP_BYTES = 0.5 * GIB
ROLLOUT_NEAR = timedelta(minutes=15)


def _limits(limits: QueryResult) -> dict[str, float]:
    if limits.empty:
        return {}
    frame = limits.current
    last = frame.sort_values("timestamp").groupby("instance")["value"].last()
    return {str(k): float(v) for k, v in last.items() if v > 0}


def _last_values(memory: QueryResult) -> dict[str, float]:
    frame = memory.current.sort_values("timestamp")
    return {str(k): float(v) for k, v in frame.groupby("instance")["value"].last().items()}


def headroom(incident: Incident, memory: QueryResult, limits: QueryResult) -> None:
    """Immediate check: each instance's memory now against its limit."""
    if memory.empty:
        return
    limit_by_instance = _limits(limits)
    now = _last_values(memory)
    usage = {
        instance: value / limit_by_instance[instance]
        for instance, value in now.items()
        if instance in limit_by_instance
    }
    if not usage:
        top = max(now, key=now.__getitem__)
        incident.record(
            Finding(
                severity="warning",
                title=f"No memory limit is known; the largest instance is {top} at "
                f"{format_value(now[top], 'bytes')}",
                subject={"instance": top},
                metric=limits.name,
                recommendation="Export container_spec_memory_limit_bytes (cAdvisor) or map "
                "memory_limit_by_instance to your limit metric in the config.",
            )
        )
        return
    top = max(usage, key=usage.__getitem__)
    share = usage[top]
    severity = "critical" if share >= 0.9 else "warning" if share >= 0.8 else "info"
    incident.record(
        Finding(
            severity=severity,
            title=(
                f"{top} uses {share:.0%} of its memory limit "
                f"({format_value(now[top], 'bytes')} of "
                f"{format_value(limit_by_instance[top], 'bytes')})"
                + ("" if severity != "info" else ": headroom left on every instance")
            ),
            subject={"instance": top},
            metric=memory.name,
            observed=now[top],
            baseline=limit_by_instance[top],
            unit="bytes",
            recommendation=(
                f"Restart or drain {top} before it is OOM-killed, then find the cause below."
                if severity != "info"
                else None
            ),
        )
    )


def overview(incident: Incident, memory: QueryResult, limits: QueryResult) -> None:
    """Memory per instance, baseline dashed, the limit drawn."""
    if memory.empty:
        return
    limit_by_instance = _limits(limits)
    incident.show(
        charts.timeseries(
            memory.current,
            baseline=memory.baseline,
            by="instance",
            title=incident.chart_title("Resident memory by instance (dashed: baseline)"),
            unit="bytes",
            alert_start=pd.Timestamp(incident.starts_at),
            limit=min(limit_by_instance.values()) if limit_by_instance else None,
            limit_label="memory limit",
        )
    )


@dataclass(frozen=True)
class Growth:
    instance: str
    kind: str  # "leak" | "step"
    at: pd.Timestamp | None
    per_hour: float  # bytes per hour (leaks)
    shift: float  # bytes (steps)
    current: float
    baseline: float
    time_to_limit: pd.Timedelta | None


def _growth(
    instance: str, series: pd.Series, baseline: pd.Series, limit: float | None
) -> Growth | None:
    onset = analysis.find_onset(series)
    baseline_level = float(baseline.median()) if len(baseline.dropna()) else math.nan
    current = float(series.dropna().iloc[-1]) if len(series.dropna()) else math.nan
    if onset is not None and onset.direction == "up" and onset.kind == "ramp":
        fit = analysis.trend(series, since=onset.at)
        if fit.per_hour >= LEAK_BYTES_PER_HOUR:
            ttl = analysis.time_to_limit(series, limit, since=onset.at) if limit else None
            return Growth(
                instance, "leak", onset.at, fit.per_hour, 0.0, current, baseline_level, ttl
            )
    if onset is not None and onset.direction == "up" and onset.shift >= STEP_BYTES:
        return Growth(instance, "step", onset.at, 0.0, onset.shift, current, baseline_level, None)
    # A leak that began before the window: steady growth over all of it.
    fit = analysis.trend(series)
    if fit.per_hour >= LEAK_BYTES_PER_HOUR and fit.r2 >= 0.8:
        ttl = analysis.time_to_limit(series, limit) if limit else None
        return Growth(instance, "leak", None, fit.per_hour, 0.0, current, baseline_level, ttl)
    return None


def growth(
    incident: Incident, memory: QueryResult, limits: QueryResult, versions: QueryResult
) -> None:
    """Leak (steady growth) or step change per instance, time to the limit, and rollouts."""
    if memory.empty:
        return
    limit_by_instance = _limits(limits)
    current = analysis.to_wide(memory.current, "instance")
    before = (
        analysis.to_wide(memory.baseline, "instance")
        if memory.baseline is not None and not memory.baseline.empty
        else pd.DataFrame()
    )
    rollouts = (
        analysis.changes(versions.current, label="model_version")
        if not versions.empty
        else pd.DataFrame(columns=["timestamp", "instance", "to"])
    )
    found = []
    for instance in current.columns:
        result = _growth(
            instance,
            current[instance],
            before[instance] if instance in before.columns else pd.Series(dtype=float),
            limit_by_instance.get(instance),
        )
        if result is not None:
            found.append(result)
    if not found:
        now = _last_values(memory)
        top = max(now, key=now.__getitem__)
        incident.record(
            Finding(
                severity="info",
                title=(
                    "No instance's memory grew or stepped up in the window; the largest is "
                    f"{top} at {format_value(now[top], 'bytes')}, as in its baseline"
                ),
                subject={"service": incident.service},
                metric=memory.name,
                recommendation=None,
            )
        )
        return
    # Fastest to the limit first; steps by size.
    found.sort(
        key=lambda g: (
            g.time_to_limit.total_seconds() if g.time_to_limit is not None else math.inf,
            -g.shift,
        )
    )
    for item in found:
        limit = limit_by_instance.get(item.instance)
        subject = {"instance": item.instance}
        version_note = ""
        if item.at is not None and len(rollouts):
            near = rollouts[
                (rollouts["instance"] == item.instance)
                & ((rollouts["timestamp"] - item.at).abs() <= ROLLOUT_NEAR)
            ]
            if len(near):
                version = str(near["to"].iloc[0])
                subject["model_version"] = version
                version_note = f", when model {version} was loaded there,"
        at = f" at {item.at:%H:%M} UTC" if item.at is not None else ""
        since = f" since {item.at:%H:%M} UTC" if item.at is not None else " all window long"
        if item.kind == "leak":
            ttl = item.time_to_limit
            reach = (
                f"; reaches its {format_value(limit, 'bytes')} limit in about {_duration(ttl)}"
                if ttl is not None and limit
                else ""
            )
            severity = "critical" if ttl is not None and ttl <= pd.Timedelta(hours=1) else "warning"
            title = (
                f"{item.instance} leaks memory: it grows "
                f"{format_value(item.per_hour, 'bytes')}/h steadily{since}"
                f"{version_note.rstrip(',')}{reach}"
            )
            recommendation = (
                f"Restart {item.instance} before it reaches its limit to buy time, then take a "
                "heap profile of the growth (or roll back the version named here)."
            )
        else:
            share = item.current / limit if limit else None
            severity = "critical" if share is not None and share >= 0.9 else "warning"
            title = (
                f"{item.instance} memory stepped up by {format_value(item.shift, 'bytes')}"
                f"{at}{version_note} and stays there "
                f"({format_value(item.current, 'bytes')} now)"
            )
            recommendation = (
                f"Roll back model {subject['model_version']} on {item.instance} or give it "
                "the headroom the new version needs."
                if "model_version" in subject
                else f"Find what changed on {item.instance} at that time (config, traffic mix)."
            )
        incident.record(
            Finding(
                severity=severity,
                title=title,
                subject=subject,
                metric=memory.name,
                observed=item.current,
                baseline=item.baseline,
                unit="bytes",
                recommendation=recommendation,
                likely_cause=True,
            )
        )


def restarts(incident: Incident, starts: QueryResult) -> None:
    """Process restarts in the window (an OOM kill shows as one)."""
    if starts.empty:
        return
    rows = []
    for instance, group in starts.current.sort_values("timestamp").groupby("instance"):
        values = group["value"].to_numpy()
        times = group["timestamp"].to_list()
        for index in range(1, len(values)):
            if values[index] > values[index - 1] + 1:
                rows.append((str(instance), pd.Timestamp(times[index])))
    if not rows:
        incident.record(
            Finding(
                severity="info",
                title="No process restarted in the window",
                subject={"service": incident.service},
                metric=starts.name,
            )
        )
        return
    instances = sorted({instance for instance, _ in rows})
    when = ", ".join(f"{instance} at {moment:%H:%M}" for instance, moment in rows[:6])
    incident.record(
        Finding(
            severity="warning",
            title=f"{len(rows)} restart(s) in the window: {when} UTC",
            detail="A restart of a growing process is often an OOM kill; check the container's "
            "last termination reason (kubectl describe pod).",
            subject={"instance": join(instances)},
            metric=starts.name,
            observed=float(len(rows)),
            unit="restarts",
        )
    )


def _duration(value: pd.Timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def resolution(incident: Incident) -> None:
    resolution_steps(
        incident,
        quiet=(
            "A quiet run: no instance is near its memory limit, none grew or stepped up "
            "against its own history, and none restarted. The alert may be too sensitive."
        ),
        fallback=(
            "Nothing here names a cause: compare with the baseline over a longer window "
            "(`lookback='12h'`), and check the request mix (large images and audio use more "
            "memory)."
        ),
    )
