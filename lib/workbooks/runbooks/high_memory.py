"""high-memory: how close each instance is to its limit, leak or step, and who is responsible.

Cells of ``notebooks/high-memory.ipynb`` call these steps in order; each records findings.
Thresholds are declared in :data:`THRESHOLDS`; a team overrides them under
``runbooks: {high-memory: {thresholds: ...}}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import SEVERITIES, Finding, Severity, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

GIB = 1024**3
THRESHOLDS = steps.Thresholds(
    "high-memory",
    # Share of its memory limit an instance uses now.
    limit_share_critical=0.9,
    limit_share_warning=0.8,
    # A leak that reaches the limit within this many hours is critical (any leak is a warning).
    hours_to_limit_critical=1.0,
    hours_to_limit_warning=4.0,
    # A steady growth this fast (bytes per hour) is a leak; a step up this large is a step.
    leak_bytes_per_hour=0.25 * GIB,
    step_bytes=0.5 * GIB,
)
# A model version loaded this close to a step or the start of a leak is a suspect.
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
    severity = THRESHOLDS.of(incident).severity(share, "limit_share")
    steps.checked(incident, f"headroom: the fullest instance, {top}, uses {share:.0%} of its limit")
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
    """How one instance's memory grew in the window: a leak (steady) or a step."""

    instance: str
    kind: str  # "leak" | "step"
    at: pd.Timestamp | None
    per_hour: float  # bytes per hour (leaks)
    shift: float  # bytes (steps)
    current: float
    baseline: float
    time_to_limit: pd.Timedelta | None

    @property
    def grown(self) -> float:
        """Bytes gained: the step, or the leak's growth since it began (or over the window)."""
        if self.kind == "step":
            return self.shift
        return max(self.current - self.baseline, 0.0) if math.isfinite(self.baseline) else 0.0


def _growth(
    instance: str,
    series: pd.Series,
    baseline: pd.Series,
    limit: float | None,
    limits: steps.Limits,
) -> Growth | None:
    onset = analysis.find_onset(series)
    baseline_level = float(baseline.median()) if len(baseline.dropna()) else math.nan
    current = float(series.dropna().iloc[-1]) if len(series.dropna()) else math.nan
    if onset is not None and onset.direction == "up" and onset.kind == "ramp":
        fit = analysis.trend(series, since=onset.at)
        if fit.per_hour >= limits["leak_bytes_per_hour"]:
            ttl = analysis.time_to_limit(series, limit, since=onset.at) if limit else None
            return Growth(
                instance, "leak", onset.at, fit.per_hour, 0.0, current, baseline_level, ttl
            )
    if onset is not None and onset.direction == "up" and onset.shift >= limits["step_bytes"]:
        return Growth(instance, "step", onset.at, 0.0, onset.shift, current, baseline_level, None)
    # A leak that began before the window: steady growth over all of it.
    fit = analysis.trend(series)
    if fit.per_hour >= limits["leak_bytes_per_hour"] and fit.r2 >= 0.8:
        ttl = analysis.time_to_limit(series, limit) if limit else None
        return Growth(instance, "leak", None, fit.per_hour, 0.0, current, baseline_level, ttl)
    return None


def find_growth(memory: QueryResult, limit_by_instance: dict[str, float], limits: steps.Limits):
    """Every instance that leaks or stepped up, fastest to its limit first, then by step size."""
    current = analysis.to_wide(memory.current, "instance")
    before = (
        analysis.to_wide(memory.baseline, "instance")
        if memory.baseline is not None and not memory.baseline.empty
        else pd.DataFrame()
    )
    found = []
    for instance in current.columns:
        baseline = before[instance] if instance in before.columns else pd.Series(dtype=float)
        item = _growth(
            instance, current[instance], baseline, limit_by_instance.get(instance), limits
        )
        if item is not None:
            found.append(item)
    found.sort(
        key=lambda g: (
            g.time_to_limit.total_seconds() if g.time_to_limit is not None else math.inf,
            -g.shift,
        )
    )
    return found


def growth(
    incident: Incident, memory: QueryResult, limits: QueryResult, versions: QueryResult
) -> None:
    """Leak (steady growth) or step change per instance, time to the limit, and rollouts."""
    if memory.empty:
        return
    thresholds = THRESHOLDS.of(incident)
    limit_by_instance = _limits(limits)
    found = find_growth(memory, limit_by_instance, thresholds)
    if not found:
        now = _last_values(memory)
        top = max(now, key=now.__getitem__)
        steps.checked(incident, "growth: no instance leaked or stepped up")
        incident.record(
            Finding(
                severity="info",
                title=(
                    "No instance's memory grew or stepped up in the window; the largest is "
                    f"{top} at {format_value(now[top], 'bytes')}, as in its baseline"
                ),
                subject={"service": incident.service},
                metric=memory.name,
            )
        )
        return
    graded = {
        g.instance: _severity(g, limit_by_instance.get(g.instance), thresholds) for g in found
    }
    explained = _rollouts(incident, memory, versions, found, graded, thresholds)
    for item in found:
        incident.record(
            _growth_finding(
                item,
                limit_by_instance.get(item.instance),
                graded[item.instance],
                metric=memory.name,
                version=explained.get(item.instance),
            )
        )


def _severity(item: Growth, limit: float | None, limits: steps.Limits) -> Severity:
    if item.kind == "leak":
        hours = item.time_to_limit.total_seconds() / 3600 if item.time_to_limit else None
        grade = limits.severity(hours, "hours_to_limit", direction="down")
    else:
        grade = limits.severity(item.current / limit if limit else None, "limit_share")
    # Any leak or step is at least a warning: it is why the alert fired.
    return grade if grade != "info" else "warning"


def _rollouts(
    incident: Incident,
    memory: QueryResult,
    versions: QueryResult,
    found: list[Growth],
    graded: dict[str, Severity],
    limits: steps.Limits,
) -> dict[str, str]:
    """Whether the growth follows a model version; instance -> the version that explains it."""
    grown = {g.instance: g.grown for g in found}
    changes = {str(i): grown.get(str(i), 0.0) for i in memory.current["instance"].unique()}
    onsets = [g.at for g in found if g.at is not None]
    worst = min((graded[g.instance] for g in found), key=SEVERITIES.index)
    verdicts = steps.correlate_rollouts(
        incident,
        versions,
        changes,
        onset=min(onsets) if onsets else None,
        severity=worst,
        min_change=limits["step_bytes"],
        gap=2.0,
        measure="delta",
        what="the memory growth",
        unit="bytes",
        before=ROLLOUT_NEAR,
        after=ROLLOUT_NEAR,
        recommendation="Roll back the model version named here on these instances, or give "
        "them the headroom the new version needs.",
    )
    return {
        unit: verdict.rollout.version
        for verdict in verdicts
        if verdict.named
        for unit in verdict.with_moved
    }


def _growth_finding(
    item: Growth, limit: float | None, severity: Severity, *, metric: str, version: str | None
) -> Finding:
    subject: dict[str, str] = {"instance": item.instance}
    if version is not None:
        subject["model_version"] = version
    loaded = f", when model {version} was loaded there," if version else ""
    if item.kind == "leak":
        ttl = item.time_to_limit
        since = f" since {item.at:%H:%M} UTC" if item.at is not None else " all window long"
        reach = (
            f"; reaches its {format_value(limit, 'bytes')} limit in about {_duration(ttl)}"
            if ttl is not None and limit
            else ""
        )
        title = (
            f"{item.instance} leaks memory: it grows {format_value(item.per_hour, 'bytes')}/h "
            f"steadily{since}{loaded.rstrip(',')}{reach}"
        )
        recommendation = (
            f"Restart {item.instance} before it reaches its limit to buy time, then take a "
            "heap profile of the growth (or roll back the version named here)."
        )
    else:
        at = f" at {item.at:%H:%M} UTC" if item.at is not None else ""
        title = (
            f"{item.instance} memory stepped up by {format_value(item.shift, 'bytes')}{at}"
            f"{loaded} and stays there ({format_value(item.current, 'bytes')} now)"
        )
        recommendation = f"Find what changed on {item.instance} at that time (config, traffic mix)."
    return Finding(
        severity=severity,
        title=title,
        subject=subject,
        metric=metric,
        observed=item.current,
        baseline=item.baseline,
        unit="bytes",
        recommendation=recommendation,
        # A version named above is the cause; the instance's own growth is then its symptom.
        cause=None if version else "instance",
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
    steps.checked(incident, f"restarts: {len(rows)} in the window")
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
            subject={"instance": instances},
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
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: no instance is near its memory limit, none grew or stepped up "
            "against its own history, and none restarted. The alert may be too sensitive."
        ),
        next_steps=[
            "Compare with the baseline over a longer window (`lookback='12h'`).",
            "Check the request mix: large images and audio use more memory.",
            "Look at the container's working set (cAdvisor) beside the process's RSS.",
        ],
    )
