"""service-down: which targets are down and since when, crash loops, and the change behind them.

Cells of ``notebooks/service-down.ipynb`` call these steps in order; each records findings. The
first (:func:`status`) returns an :class:`~workbooks.runbooks.service_down_state.Outage` the
later steps read: the node, dependency and probe steps live in
:mod:`workbooks.runbooks.service_down_causes` and are re-exported here, so a cell needs this one
module. Thresholds are declared in :data:`THRESHOLDS`; a team overrides them under
``runbooks: {service-down: {thresholds: ...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.service_down_causes import (
    dependencies,
    dependency_names,
    nodes,
    probes,
    query_dependencies,
)
from workbooks.runbooks.service_down_state import (
    ROLLOUT_AFTER,
    ROLLOUT_BEFORE,
    THRESHOLDS,
    Outage,
    Target,
    down_shares,
    host_of,
    minute,
    scope,
    targets_of,
)

__all__ = [
    "THRESHOLDS",
    "Crashes",
    "Outage",
    "dependencies",
    "dependency_names",
    "nodes",
    "probes",
    "query_dependencies",
    "resolution",
    "restarts",
    "scope",
    "status",
    "timeline",
    "what_changed",
]

QUIET = (
    "A quiet run: every target of the service is up now and every probe succeeds; nothing "
    "stayed down (a missed scrape or a short blip at most). The alert's `for:` may be too short."
)


def status(incident: Incident, up: QueryResult, success: QueryResult) -> Outage:
    """Section 2: is it still down? Targets down (or flapping) now, failing probes, since when."""
    limits = THRESHOLDS.of(incident)
    targets = tuple(targets_of(up.current, by="instance", limits=limits))
    found = tuple(targets_of(success.current, by="instance", limits=limits))
    outage = Outage(service=scope(incident)["service"], targets=targets, probes=found)
    severity: Severity = limits.severity(outage.share_down, "down_share")
    if outage.failing_probes:
        severity = "critical"  # users cannot reach the service through its front door
    since_onset = down_shares(up.current, outage.onset)
    outage = replace(outage, severity=severity, since_onset=since_onset)
    if not targets and not found:
        steps.checked(incident, "status: no target or probe data for the service")
        return outage
    finding = Finding(
        severity=severity,
        title=_status_title(outage),
        subject=_status_subject(outage),
        metric=up.name if outage.down or not outage.failing_probes else success.name,
        observed=float(len(outage.down)),
        unit="targets down",
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=outage.ongoing, finding=finding)
    steps.checked(
        incident, f"still happening: {'yes' if outage.ongoing else 'no'} ({finding.title})"
    )
    return outage


def _status_title(outage: Outage) -> str:
    total = len(outage.targets)
    if outage.down:
        names = ", ".join(_target_text(t) for t in outage.down[:6])
        return (
            f"Still happening: {len(outage.down)} of {total} targets of {outage.service} are down "
            f"now ({names})"
        )
    if outage.failing_probes:
        names = ", ".join(f"{p.name} (since {minute(p.went_down)})" for p in outage.failing_probes)
        return f"Still happening: the probe of {names} fails while all {total} targets are up"
    missed = [t for t in (*outage.targets, *outage.probes) if t.missed]
    blips = "; ".join(
        f"{t.name} missed {t.down_samples} {steps.plural('scrape', t.down_samples)} at "
        f"{minute(t.went_down)}"
        for t in missed[:4]
    )
    return f"Not happening now: all {total} targets are up and every probe succeeds" + (
        f" ({blips}, up again since)" if blips else ""
    )


def _target_text(target: Target) -> str:
    if target.down_transitions >= 2:
        times = target.down_transitions
        return f"{target.name} flapping, down {times} times since {minute(target.went_down)}"
    return f"{target.name} down since {minute(target.went_down)}"


def _status_subject(outage: Outage) -> dict[str, object]:
    if outage.down:
        return {"instance": [t.name for t in outage.down]}
    if outage.failing_probes:
        return {"instance": [p.name for p in outage.failing_probes]}
    return {"service": outage.service}


def timeline(incident: Incident, up: QueryResult, outage: Outage) -> None:
    """Section 3.1: which targets went down when: a table per target and targets up over time."""
    if up.empty:
        return
    rows = ["| target | now | went down | samples down | times down |", "|---|---|---|---|---|"]
    for target in sorted(outage.targets, key=lambda t: (not t.down_now, t.went_down is None)):
        rows.append(
            f"| `{target.name}` | {'**down**' if target.down_now else 'up'} | "
            f"{minute(target.went_down) if target.down_samples else '-'} | "
            f"{target.down_samples} of {target.samples} | {target.down_transitions} |"
        )
    incident.markdown("\n".join(rows))
    incident.show(
        charts.timeseries(
            bands(up.current),
            title=incident.chart_title(f"Which targets went down when: {outage.service}"),
            subtitle="one band per target: high = up, low = down",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=outage.onset,
        )
    )
    counts = analysis.to_wide(up.current, "instance", agg="min").sum(axis=1).rename("targets up")
    before = None
    if up.baseline is not None and not up.baseline.empty:
        before = analysis.to_wide(up.baseline, "instance", agg="min").sum(axis=1)
        before = before.rename("targets up")
    incident.show(
        charts.timeseries(
            counts,
            baseline=before,
            title=incident.chart_title(f"Targets up of {outage.service} (dashed: baseline)"),
            unit="count",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=outage.onset,
        )
    )
    fell = sorted((t for t in outage.targets if t.down_samples), key=lambda t: t.went_down)
    order = ", ".join(f"{t.name} at {minute(t.went_down)}" for t in fell[:8])
    incident.record(
        Finding(
            severity="info",
            title=f"Went down, in order: {order}" if fell else "No target missed a scrape",
            subject={"instance": [t.name for t in fell]} if fell else {"service": outage.service},
            metric=up.name,
        )
    )


def bands(frame: pd.DataFrame) -> pd.DataFrame:
    """``up`` per instance as stacked bands (instance k: k + 0.8 when up, k when down), so a
    timeline of many 0/1 series stays readable. Pure."""
    wide = analysis.to_wide(frame, "instance", agg="min").sort_index()
    columns = sorted(wide.columns, reverse=True)
    return pd.DataFrame(
        {name: number + 0.8 * wide[name] for number, name in enumerate(columns)}, index=wide.index
    )


@dataclass(frozen=True)
class Crashes:
    """Containers that restarted repeatedly in the window, and why they last terminated."""

    restarts: dict[str, int]  # pod -> restarts in the window (every pod with data)
    pods: tuple[str, ...]  # the crash-looping ones, most restarts first
    reasons: dict[str, str]  # pod -> last terminated reason, for every pod that has one

    @property
    def reason(self) -> str | None:
        """The crash-looping pods' last terminated reason, when they share one."""
        found = {self.reasons[p] for p in self.pods if p in self.reasons}
        return found.pop() if len(found) == 1 else None


def restarts(
    incident: Incident, counts: QueryResult, reasons: QueryResult, outage: Outage
) -> Crashes:
    """Section 3.2: container restarts in the window (a crash loop) and their termination reason."""
    limits = THRESHOLDS.of(incident)
    crashes = crashes_of(counts.current, reasons.current, min_restarts=limits["crash_restarts"])
    if counts.empty:
        return crashes
    incident.timeseries(counts, by="pod")
    if not crashes.pods:
        most = max(crashes.restarts, key=crashes.restarts.__getitem__)
        total = _last_by(counts.current, "pod").get(most, 0.0)
        steps.checked(incident, "restarts: no container crash-loops")
        incident.record(
            Finding(
                severity="info",
                title=f"No container crash-loops: the most restarts in the window are "
                f"{crashes.restarts[most]} ({most}, {total:.0f} in its lifetime)",
                subject={"service": outage.service},
                metric=counts.name,
            )
        )
        return crashes
    listed = ", ".join(f"{p} ({crashes.restarts[p]})" for p in crashes.pods[:6])
    why = f"; last terminated: {crashes.reason}" if crashes.reason else ""
    steps.checked(incident, f"restarts: {len(crashes.pods)} pods crash-loop ({listed}){why}")
    subject: dict[str, object] = {"pod": list(crashes.pods)}
    if crashes.reason:
        subject["reason"] = crashes.reason
    incident.record(
        Finding(
            severity=outage.severity if outage.severity != "info" else "warning",
            title=f"{len(crashes.pods)} {steps.plural('pod', len(crashes.pods))} crash-loop: "
            f"{listed} restarts in the window{why}",
            detail="A crash loop is a symptom: the steps below look for the change (a version) "
            "or the dependency behind it.",
            subject=subject,
            metric=counts.name,
            observed=float(sum(crashes.restarts[p] for p in crashes.pods)),
            unit="restarts",
            recommendation=_crash_advice(crashes, outage.service),
        )
    )
    return crashes


def crashes_of(counts: pd.DataFrame, reasons: pd.DataFrame, *, min_restarts: float) -> Crashes:
    """Restarts per pod in the window (counter resets handled) and the crash-looping pods. Pure."""
    restarts: dict[str, int] = {}
    if not counts.empty:
        wide = analysis.to_wide(counts, "pod", agg="max").sort_index()
        for pod in wide.columns:
            steps_up = wide[pod].dropna().diff().dropna()
            # A counter that fell was reset (a new pod with the same name): count from zero.
            restarts[str(pod)] = int(steps_up.clip(lower=0).sum())
    looping = sorted(
        (p for p, n in restarts.items() if n >= min_restarts), key=lambda p: -restarts[p]
    )
    last: dict[str, str] = {}
    if not reasons.empty and {"pod", "reason"} <= set(reasons.columns):
        present = reasons[reasons["value"] > 0].sort_values("timestamp")
        last = {str(k): str(v) for k, v in present.groupby("pod")["reason"].last().items()}
    return Crashes(restarts, tuple(looping), last)


def _last_by(frame: pd.DataFrame, label: str) -> dict[str, float]:
    ordered = frame.sort_values("timestamp")
    return {str(k): float(v) for k, v in ordered.groupby(label)["value"].last().items()}


def _crash_advice(crashes: Crashes, service: str) -> str:
    pod = crashes.pods[0]
    look = f"kubectl logs --previous {pod} -c {service}; kubectl describe pod {pod}"
    if crashes.reason == "OOMKilled":
        return f"{look}. OOMKilled: roll back the change below, or raise the memory limit."
    return f"{look} to see why the container exits."


def what_changed(
    incident: Incident,
    builds: QueryResult,
    models: QueryResult,
    outage: Outage,
    crashes: Crashes,
) -> None:
    """Section 3.3: did a build or model version roll out just before, on the targets that fell?"""
    changes = down_changes(outage, crashes)
    severity: Severity = outage.severity if outage.severity != "info" else "warning"
    subject = {"reason": crashes.reason} if crashes.reason and crashes.pods else None
    for versions, label in ((builds, "version"), (models, "model_version")):
        found = steps.rollouts(versions.current, label=label) if not versions.empty else []
        latest = found[-1].version if found else "the new version"
        what = "build" if label == "version" else "model"
        steps.correlate_rollouts(
            incident,
            versions,
            changes,
            onset=outage.onset,
            severity=severity,
            label=label,
            min_change=20.0,
            gap=2.0,
            measure="delta",
            what="the outage (time down since its onset)",
            unit="percent",
            subject=subject,
            before=ROLLOUT_BEFORE,
            after=ROLLOUT_AFTER,
            recommendation=f"Roll back the {what} {latest} on these instances "
            f"(kubectl rollout undo deployment/{outage.service}, or pin the previous {what} "
            "version), then watch `up` and the restarts.",
        )


def down_changes(outage: Outage, crashes: Crashes) -> dict[str, float]:
    """instance -> percent of the time since the onset it was down: what a rollout must explain.
    A target up now counts 0; a crash-looping pod at least 50 (it may answer between restarts,
    yet serves nothing reliably). Pure."""
    changes = {}
    for target in outage.targets:
        share = outage.since_onset.get(target.name, 0.0) if target.down_now else 0.0
        if host_of(target.name) in crashes.pods:
            share = max(share, 0.5)
        changes[target.name] = round(100 * share, 1)
    return changes


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no step named a cause, and the steps that fit the findings."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Read the down targets' own errors: Prometheus > Status > Targets (`lastError`).",
            "kubectl get events --sort-by=.lastTimestamp in the service's namespace.",
            "Widen the window (`lookback='12h'`) for an earlier change or a slow dependency.",
            "List the service's dependencies under `dependencies:` in the config, so the "
            "dependency step checks them.",
        ],
    )
