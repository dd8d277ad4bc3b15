"""model-load-failure: which loads fail, where and why; the version, the small-memory instances or
the slow model store responsible, and the version to roll back to.

Cells of ``notebooks/model-load-failure.ipynb`` call these steps in order; each records findings.
The failure patterns (a version, a set of instances, the store) are told apart in
:mod:`workbooks.runbooks.model_load_failure_patterns`; the counting is in
:mod:`workbooks.runbooks.model_load_failure_data`. Thresholds are declared in :data:`THRESHOLDS`;
a team overrides them under ``runbooks: {model-load-failure: {thresholds: ...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.model_load_failure_data import (
    Loads,
    Now,
    attempted_versions,
    count_loads,
    last_values,
    rollback_target,
    table_markdown,
)
from workbooks.runbooks.model_load_failure_patterns import (
    THRESHOLDS,
    Durations,
    failure_onset,
    judge_durations,
    patterns,
    rollback_command,
)

__all__ = [
    "THRESHOLDS",
    "durations",
    "failure_patterns",
    "load_table",
    "resolution",
    "results_chart",
    "rollouts_seen",
    "still_happening",
    "what_changed",
]

RECENT = timedelta(minutes=10)
QUIET = (
    "A quiet run: no model load is failing now, every instance is ready, and the failures in "
    "the window were few and retried successfully; the alert may be too sensitive (alert on "
    "failures over several minutes, or on model_ready)"
)


@dataclass(frozen=True)
class Window:
    """What the steps share: the counts over the window and its baseline, and the state now."""

    loads: Loads
    baseline: Loads
    now: Now
    end: pd.Timestamp


def still_happening(incident: Incident, loads: QueryResult, ready: QueryResult) -> Window:
    """Section 2: is any instance not ready now, are loads failing now, one instance or all?"""
    end = pd.Timestamp(incident.window.end)
    counts = count_loads(loads.current, loads.step_seconds)
    before = count_loads(loads.baseline, loads.step_seconds)
    states = last_values(ready.current)
    instances = sorted(set(states) | set(counts.instances()))
    not_ready = sorted(i for i, v in states.items() if v < 1)
    recent = count_loads(_since(loads.current, end - RECENT), loads.step_seconds).failures
    now = Now(tuple(instances), tuple(not_ready), int(recent["count"].sum()), RECENT)
    window = Window(counts, before, now, end)
    limits = THRESHOLDS.of(incident)
    share = len(not_ready) / len(instances) if instances else 0.0
    if not_ready:
        severity = limits.severity(share, "not_ready_share")
    else:
        severity = limits.severity(now.recent_failures, "failures")
        severity = "warning" if severity == "critical" else severity
    scope = (
        "all instances"
        if instances and len(not_ready) == len(instances)
        else f"{len(not_ready)} of {len(instances)} instances"
    )
    failing = f"{now.recent_failures} failed load(s) in the last {_minutes(RECENT)}"
    if severity == "info":
        title = (
            f"Not happening now: every instance is ready ({len(instances)}) and {failing}; "
            f"{int(counts.failures['count'].sum())} failed in the whole window"
        )
    elif not_ready:
        title = f"Still happening: {steps.join(not_ready)} not ready now ({scope}); {failing}"
    else:
        title = f"Still happening: every instance is ready, but {failing}"
    finding = Finding(
        severity=severity,
        title=title,
        subject={"instance": list(not_ready)} if not_ready else {"service": incident.service},
        metric=ready.name,
        observed=float(len(not_ready)),
        unit="instances",
        recommendation=_first_move(severity, not_ready, instances),
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=severity != "info", finding=finding)
    steps.checked(incident, f"readiness: {scope} not ready, {failing}")
    return window


def _first_move(severity: str, not_ready: list[str], instances: list[str]) -> str | None:
    if severity == "info":
        return None
    if instances and len(not_ready) == len(instances):
        return (
            "No instance serves the model: inference is down. Apply the fix named below now "
            "(roll back, restore memory, fail the store over) and escalate if it is not back "
            "within 15 minutes."
        )
    return (
        "Keep the ready instances serving: do not restart or roll out more pods now (a "
        "restart needs a load); check that the ready ones carry the traffic, then apply the "
        "fix named below."
    )


def rollouts_seen(incident: Incident, loads: QueryResult, builds: QueryResult) -> None:
    """Section 2: did a model version or a service build roll out just before?

    Model versions come from the load attempts (a version that never loads never shows in
    model_info); builds from build_info, since a new server runtime can refuse a model too.
    """
    changed = [(r, "model") for r in steps.rollouts(attempted_versions(loads.current))] + [
        (r, "build") for r in steps.rollouts(builds.current, label="version")
    ]
    if not changed:
        steps.checked(incident, "rollouts: no model version or service build changed")
        incident.markdown("**Rollouts:** no model version or service build changed in the window.")
        return
    lines = [
        f"- {kind} `{r.version}` from {r.at:%H:%M} UTC on {steps.join(r.units)}"
        for r, kind in sorted(changed, key=lambda pair: pair[0].at)
    ]
    incident.markdown(
        "**Rollouts in the window** (model versions judged in 3.3):\n\n" + "\n".join(lines)
    )


def results_chart(incident: Incident, loads: QueryResult, window: Window) -> None:
    """Section 3.1: loads per 5 minutes by version and result, the failure onset marked."""
    if loads.empty:
        return
    frame = loads.current.copy()
    reason = frame["reason"].fillna("") if "reason" in frame else ""
    frame["load"] = frame["model_version"].astype(str) + " " + pd.Series(reason).replace("", "ok")
    frame["value"] = frame["value"] * 300.0
    wide = analysis.to_wide(frame, "load", agg="sum")
    onset = failure_onset(loads.current)
    incident.show(
        charts.timeseries(
            wide,
            title=incident.chart_title("Model loads per 5 min by version and result"),
            unit="count",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=onset,
        )
    )
    failed = window.loads.failures
    by_reason = failed.groupby(["model_version", "reason"])["count"].sum().sort_values()[::-1]
    text = ", ".join(f"{n} of {v} ({r})" for (v, r), n in by_reason.items()) or "none"
    steps.checked(incident, f"load results: failed loads in the window: {text}")
    incident.record(
        Finding(
            severity="info",
            title=f"Failed loads in the window, by version and reason: {text}",
            subject={"service": incident.service},
            metric=loads.name,
            observed=float(failed["count"].sum()),
            unit="loads",
        )
    )


def load_table(
    incident: Incident, window: Window, limits: QueryResult, memory: QueryResult
) -> dict[str, float]:
    """Section 3.2: instance x version load results, with memory limit, memory now and readiness.

    Returns instance -> memory limit (bytes), for the failure patterns.
    """
    limit_by = {k: v for k, v in last_values(limits.current).items() if v > 0}
    rss = last_values(memory.current)
    incident.markdown(table_markdown(window.loads, window.now, limit_by, rss))
    return limit_by


def what_changed(
    incident: Incident, loads: QueryResult, window: Window
) -> list[steps.RolloutVerdict]:
    """Section 3.3: did a version roll out near the onset, and do the failures follow it?

    The version each instance was loading comes from its load attempts, since a version that
    never loads never shows in model_info. Always names the rollback target.
    """
    limits = THRESHOLDS.of(incident)
    onset = failure_onset(loads.current)
    since = onset if onset is not None else pd.Timestamp(incident.starts_at)
    recent = count_loads(_since(loads.current, since), loads.step_seconds)
    changes = {
        i: float(recent.failures[recent.failures["instance"] == i]["count"].sum())
        for i in window.now.instances
    }
    found = steps.rollouts(attempted_versions(loads.current))
    verdicts = [
        steps.judge_rollout(
            rollout, changes, onset=since, min_change=limits["failures_moved"], gap=2.0
        )
        for rollout in found
    ]
    named = {verdict.rollout.version for verdict in verdicts if verdict.named}
    target = rollback_target(window.loads, window.baseline, exclude=named)
    for verdict in verdicts:
        incident.record(_rollout_finding(incident, verdict, recent, target, loads.name))
    if not found:
        steps.checked(incident, "rollouts: no model version rolled out in the window")
        incident.record(
            Finding(
                severity="info",
                title="No model version rolled out in the window",
                subject={"service": incident.service},
                metric=loads.name,
            )
        )
    _record_target(incident, window, target, rolled=bool(found), metric=loads.name)
    return verdicts


def _rollout_finding(
    incident: Incident,
    verdict: steps.RolloutVerdict,
    recent: Loads,
    target: str | None,
    metric: str,
) -> Finding:
    """THE RULE of the shared rollout step, told in loads: the version's failures and successes."""
    rollout = verdict.rollout
    mine = recent.table[recent.table["model_version"] == rollout.version]
    failed = mine[mine["result"] == "failure"]
    total = int(failed["count"].sum())
    loaded = recent.loaded_by(rollout.version)
    where = f"on {steps.join(rollout.units)} from {rollout.at:%H:%M} UTC"
    if not verdict.named:
        steps.checked(incident, f"rollout of {rollout.version}: ruled out ({verdict.reason})")
        return Finding(
            severity="info",
            title=f"{rollout.version} rolled out {where}, but the failed loads do not follow it: "
            f"{verdict.reason}" + (f"; it loaded fine on {steps.join(loaded)}" if loaded else ""),
            subject={"model_version": rollout.version},
            metric=metric,
        )
    reasons = failed.groupby("reason")["count"].sum().sort_values(ascending=False)
    reason = str(reasons.index[0]) if len(reasons) else ""
    subject = {
        "model_version": rollout.version,
        "reason": reason,
        "instance": list(verdict.with_moved),
    }
    took, moved = len(rollout.units), len(verdict.with_moved)
    scope = (
        f"{moved} of the {took} instances that took it"
        if moved < took
        else "every instance"
        if verdict.everywhere
        else "every instance that took it"
    )
    severity = THRESHOLDS.of(incident).severity(total, "failures")
    steps.checked(incident, f"rollout of {rollout.version}: named ({verdict.reason})")
    return Finding(
        severity=steps.as_severe_as_symptom(incident, severity, subject),
        title=f"{rollout.version} fails to load with {reason} on {scope} "
        f"({steps.join(verdict.with_moved)}): {total} failed loads since it rolled out at "
        f"{rollout.at:%H:%M} UTC, "
        + (f"loaded only on {steps.join(loaded)}" if loaded else "loaded nowhere"),
        detail=verdict.reason,
        subject=subject,
        metric=metric,
        observed=float(total),
        unit="loads",
        cause="rollout",
        recommendation=rollback_command(incident.service, recent.model(), target),
    )


def _record_target(
    incident: Incident, window: Window, target: str | None, *, rolled: bool, metric: str
) -> None:
    model = window.loads.model()
    count = len(window.now.instances)
    if target is None:
        title = (
            "No version loaded on every instance in the window or its baseline: widen the "
            "window (lookback='12h') to find a rollback target"
        )
    elif not rolled:
        title = (
            f"No rollback to make: no version rolled out in the window; {model} {target}, the "
            f"version running, is the last that loaded on every instance ({count} of {count})"
        )
    else:
        title = (
            f"Rollback target: {model} {target}, the last version that loaded on every "
            f"instance ({count} of {count})"
        )
    steps.checked(incident, f"rollback target: {target or 'none found'}")
    incident.record(
        Finding(
            severity="info",
            title=title,
            subject={"model_version": target} if target else {"service": incident.service},
            metric=metric,
        )
    )


def durations(
    incident: Incident, loads: QueryResult, p50: QueryResult, p95: QueryResult
) -> Durations:
    """Section 3.4: load durations (p50 and p95 per version) against the baseline."""
    frames, before = [], []
    for result, name in ((p50, "p50"), (p95, "p95")):
        if not result.empty:
            frames.append(result.current.assign(line=result.current["model_version"] + " " + name))
        if result.baseline is not None and not result.baseline.empty:
            base = result.baseline
            before.append(base.assign(line=base["model_version"] + " " + name))
    if frames:
        incident.show(
            charts.timeseries(
                pd.concat(frames),
                baseline=pd.concat(before) if before else None,
                by="line",
                title=incident.chart_title("Model load duration by version (dashed: baseline)"),
                unit="seconds",
                alert_start=pd.Timestamp(incident.starts_at),
            )
        )
    end = pd.Timestamp(incident.window.end)
    return judge_durations(incident, p50, end=end, onset=failure_onset(loads.current))


def failure_patterns(
    incident: Incident,
    window: Window,
    verdicts: list[steps.RolloutVerdict],
    timing: Durations,
    limit_by: dict[str, float],
) -> None:
    """Section 3.5: the failures a version does not explain: some instances, the store, or
    transient ones that recovered."""
    named = {v.rollout.version for v in verdicts if v.named}
    for finding in patterns(incident, window.loads, window.now, named, timing, limit_by):
        incident.record(finding)


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Read a failing instance's load log (`kubectl logs POD | grep -i load`).",
            "Check the model store and registry status, and the artifact's checksum.",
            "Widen the window (`lookback='12h'`) and compare with the baseline again.",
        ],
    )


def _since(frame: pd.DataFrame, moment: pd.Timestamp) -> pd.DataFrame:
    if frame is None or frame.empty:
        return frame
    return frame[pd.to_datetime(frame["timestamp"], utc=True) >= moment]


def _minutes(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:.0f} min"
