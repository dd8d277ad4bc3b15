"""android-deployment and ios-deployment: is a new app version hurting users, where, and should
its rollout stop?

One module for both runbooks (``android_deployment`` and ``ios_deployment`` re-export it): the
platform comes from the incident's runbook (:func:`platform_of`), and only what truly differs is
platform data (:mod:`.mobile_deployment_platform`). Crash steps live in
:mod:`.mobile_deployment_crashes`. Every query selects the app by the alert's ``service`` label
(the telemetry pipeline tags each series with its app) and the platform by its own runbook.
"""

from __future__ import annotations

import math

import pandas as pd

from workbooks.core.findings import Finding, Severity, format_value
from workbooks.notebook import analysis, charts, frames
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.mobile_deployment_crashes import (
    crash_breakdown,
    crash_free,
    crash_table,
)
from workbooks.runbooks.mobile_deployment_platform import (
    ANDROID,
    IOS,
    Platform,
    Release,
    find_release,
    means,
    platform_of,
    since_release,
    totals,
)
from workbooks.runbooks.mobile_deployment_verdict import downloads, resolution, rollout_decision

__all__ = [
    "ANDROID",
    "IOS",
    "Platform",
    "Release",
    "crash_breakdown",
    "crash_free",
    "downloads",
    "latency",
    "platform_of",
    "release",
    "resolution",
    "rollout_decision",
    "still_happening",
]

RECENT = pd.Timedelta(minutes=10)
PAIR = "backend_on_device"  # the column joining backend and device class in latency frames


def release(incident: Incident, sessions: QueryResult, rollout: QueryResult) -> Release:
    """Section 2: which version is rolling out, at what share, and which one it replaces."""
    platform = platform_of(incident)
    if "service" not in incident.labels:
        incident.record(
            Finding(
                severity="warning",
                title="The alert names no app (no `service` label): the queries cannot select "
                "this app's telemetry",
                subject={"platform": platform.name},
                recommendation="Add `service` to the alert rule's `by (...)` (the telemetry "
                "pipeline tags every series with its app as `service`), or re-run with "
                "labels={'service': '<app>', ...}.",
            )
        )
    found = find_release(sessions.current, rollout.current if not rollout.empty else None)
    if found.new is None:
        steps.checked(incident, f"no {platform.name} sessions by app version in the window")
        return found
    share = f"{found.share * 100:.0f}%" if found.share is not None else "an unknown share"
    adopted = totals(sessions.current, by=["app_version"], since=since_release(incident, found))
    of_sessions = adopted.get(found.new, 0.0) / adopted.sum() if adopted.sum() else math.nan
    steps.checked(incident, f"{found.new} at {share} of the {platform.rollout_word}")
    incident.record(
        Finding(
            severity="info",
            title=(
                f"{found.new} is in a {platform.rollout_word} on {platform.store} at {share}, "
                f"{format_value(of_sessions, 'ratio')} of sessions since "
                f"{found.since:%H:%M} UTC; the version before it is {found.previous or 'none'}"
            ),
            subject={"app_version": found.new},
            metric=rollout.name,
            observed=found.share,
            unit="ratio",
        )
    )
    return found


def still_happening(
    incident: Incident,
    found: Release,
    crash_rate: QueryResult,
    sessions_by_os: QueryResult,
    crashes_by_os: QueryResult,
    p95: QueryResult,
    failures: QueryResult,
) -> None:
    """Section 2: over the last 10 minutes, the worst of: the OS version where the new version
    crashes most against the previous one, all crashes against the baseline, the slowest
    backend against its baseline, and model download failures of the new version."""
    signals = [
        _recent_crash_slice(incident, found, sessions_by_os, crashes_by_os),
        _recent_crash_rate(incident, crash_rate),
        _recent_latency(incident, p95),
        _recent_failures(incident, found, failures),
    ]
    measured = [signal for signal in signals if signal is not None]
    if not measured:
        steps.checked(incident, "still happening: no data for the last 10 minutes")
        return
    order = {"critical": 0, "warning": 1, "info": 2}
    severity, text, subject = min(measured, key=lambda signal: order[signal[0]])
    ongoing = severity != "info"
    finding = Finding(
        severity=severity,
        title=f"Still happening: {text}" if ongoing else f"Not happening now: {text}",
        subject=subject,
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=ongoing, finding=finding)
    steps.checked(incident, f"last 10 minutes: {text}")


Signal = tuple[Severity, str, dict[str, str]]


def _recent_crash_slice(
    incident: Incident, found: Release, sessions: QueryResult, crashes: QueryResult
) -> Signal | None:
    if not found.compared or sessions.empty or crashes.empty:
        return None
    limits = platform_of(incident).thresholds.of(incident)
    whole = crash_table(
        sessions.current,
        crashes.current,
        by="os_version",
        new=str(found.new),
        previous=str(found.previous),
        since=since_release(incident, found),
        min_sessions=limits["min_sessions"],
        min_crashes=limits["min_crashes"],
    )
    judged = whole[whole["judged"]]
    if judged.empty:
        return None
    worst = str(judged.iloc[0]["os_version"])
    end = frames.utc_index(sessions.current["timestamp"]).max()
    recent = crash_table(
        sessions.current,
        crashes.current,
        by="os_version",
        new=str(found.new),
        previous=str(found.previous),
        since=end - RECENT,
        min_sessions=0,
        min_crashes=0,
    )
    row = recent[recent["os_version"] == worst]
    ratio = float(row["current"].iloc[0] / row["baseline"].iloc[0]) if len(row) else math.nan
    text = (
        f"{found.new} on OS version {worst} crashes {steps.ratio_text(ratio)} as often as "
        f"{found.previous}"
    )
    severity = limits.severity(ratio, "crash_ratio")
    return severity, text, {"app_version": str(found.new), "os_version": worst}


def _recent_crash_rate(incident: Incident, crash_rate: QueryResult) -> Signal | None:
    if crash_rate.empty or crash_rate.baseline is None or crash_rate.baseline.empty:
        return None
    platform = platform_of(incident)
    change = crash_rate.compare(tail=RECENT)
    text = (
        f"crashes per session on every version are {steps.ratio_text(change.ratio)} their "
        f"baseline ({steps.change_text(change.current, change.baseline, 'ratio')})"
    )
    severity = platform.thresholds.of(incident).severity(change.ratio, "crash_baseline_ratio")
    return severity, text, {"platform": platform.name}


def pairs(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """A latency frame with backend and device class joined into one label (``gpu on high_end``)."""
    if frame is None or frame.empty or not {"backend", "device_class"} <= set(frame.columns):
        return None
    joined = frame["backend"].astype(str) + " on " + frame["device_class"].astype(str)
    return frame.assign(**{PAIR: joined})


def _latency_table(p95: QueryResult, since: pd.Timestamp) -> pd.DataFrame | None:
    current, baseline = pairs(p95.current), pairs(p95.baseline)
    if current is None or baseline is None:
        return None
    return analysis.top_contributors(current, baseline, by=PAIR, since=since)


def _recent_latency(incident: Incident, p95: QueryResult) -> Signal | None:
    if p95.empty:
        return None
    end = frames.utc_index(p95.current["timestamp"]).max()
    table = _latency_table(p95, end - RECENT)
    if table is None or table.empty:
        return None
    top = table.iloc[0]
    backend, _, device = str(top[PAIR]).partition(" on ")
    text = (
        f"on-device p95 of {top[PAIR]} is {steps.ratio_text(float(top['ratio']))} its baseline "
        f"({steps.change_text(float(top['current']), float(top['baseline']), 'seconds')})"
    )
    limits = platform_of(incident).thresholds.of(incident)
    return (
        limits.severity(float(top["ratio"]), "latency_ratio"),
        text,
        {
            "backend": backend,
            "device_class": device,
        },
    )


def _recent_failures(incident: Incident, found: Release, failures: QueryResult) -> Signal | None:
    if found.new is None or failures.empty:
        return None
    end = frames.utc_index(failures.current["timestamp"]).max()
    shares = means(failures.current, by=["app_version"], since=end - RECENT)
    share = float(shares.get(found.new, math.nan))
    limits = platform_of(incident).thresholds.of(incident)
    text = f"{format_value(share, 'ratio')} of model downloads on {found.new} fail"
    return limits.severity(share, "download_failure"), text, {"app_version": str(found.new)}


def latency(
    incident: Incident, p95: QueryResult, found: Release, by_version: QueryResult | None = None
) -> steps.Breakdown | None:
    """3.3: on-device inference p95 per backend and device class, each against its own baseline;
    with ``by_version``, whether a slowdown is the new version's alone (the release) or not."""
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    current, baseline = pairs(p95.current), pairs(p95.baseline)
    if current is None:
        steps.checked(incident, "on-device latency: no data")
        return None
    incident.show(
        charts.timeseries(
            current,
            baseline=baseline,
            by=PAIR,
            title=incident.chart_title("On-device inference p95 by backend and device class"),
            unit="seconds",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=found.since,
        )
    )
    since = frames.utc(incident.starts_at) - pd.Timedelta(minutes=5)
    table = _latency_table(p95, since)
    if table is None or table.empty:
        steps.checked(incident, "on-device latency: no baseline to compare")
        return None
    found_pairs = steps.classify(
        table, by=PAIR, min_change=limits["moved_ratio"], gap=limits["stands_out_gap"]
    )
    incident.show(
        charts.ranked_bars(
            found_pairs.table,
            label=PAIR,
            title=incident.chart_title("On-device p95: change against own baseline"),
            highlight=found_pairs.culprits[0] if found_pairs.culprits else None,
        )
    )
    slowest = table.sort_values("current", ascending=False).iloc[0]
    slowest_text = (
        f"{slowest[PAIR]} is the slowest ({format_value(float(slowest['current']), 'seconds')}, "
        f"{steps.ratio_text(float(slowest['ratio']))} its baseline)"
    )
    if not found_pairs.culprits:
        text = (
            f"no backend and device class stands out against its own baseline (largest "
            f"{steps.ratio_text(found_pairs.change)}); {slowest_text}"
        )
        steps.checked(incident, f"on-device latency: {text}")
        incident.record(
            Finding(
                severity="info",
                title=f"On-device latency: {text}",
                subject={"backend": "*", "device_class": "*"},
                metric=p95.name,
            )
        )
        return found_pairs
    versions = _new_against_previous(by_version, found, str(found_pairs.culprits[0]), since)
    incident.record(_slow_pairs(incident, found_pairs, slowest_text, found, versions))
    return found_pairs


def _new_against_previous(
    by_version: QueryResult | None, found: Release, pair: str, since: pd.Timestamp
) -> float | None:
    """p95 of the new version on `pair` against the previous version's, over the same minutes."""
    current = pairs(by_version.current) if by_version is not None else None
    if current is None or not found.compared or "app_version" not in current:
        return None
    medians = means(current[current[PAIR] == pair], by=["app_version"], since=since)
    new, old = medians.get(found.new), medians.get(found.previous)
    if new is None or old is None or not old > 0:
        return None
    return float(new / old)


def _slow_pairs(
    incident: Incident,
    found: steps.Breakdown,
    slowest_text: str,
    release_at_hand: Release,
    new_vs_previous: float | None,
) -> Finding:
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    culprits = [str(value).partition(" on ") for value in found.culprits]
    backends = sorted({backend for backend, _, _ in culprits})
    devices = sorted({device for _, _, device in culprits})
    worst = found.row(found.culprits[0])
    subject: dict[str, str | list[str]] = {"backend": backends, "device_class": devices}
    new, previous = release_at_hand.new, release_at_hand.previous
    fallback = (
        f"Move {steps.join(devices)} devices off the {steps.join(backends)} backend by remote "
        "config (fall back to the next backend)"
    )
    cause, versions = "dependency", ""
    recommendation = (
        f"{fallback} and check what reached those devices at the onset: a GPU driver or OS "
        "update, a new model file, a delegate setting."
    )
    if new_vs_previous is not None and new_vs_previous >= limits["moved_ratio"]:
        cause, subject["app_version"] = "rollout", str(new)
        versions = f"; only on {new}: {steps.ratio_text(new_vs_previous)} {previous}'s p95 there"
        recommendation = f"{platform.halt(str(new), release_at_hand.share)} {fallback}."
    elif new_vs_previous is not None:
        versions = (
            f"; {new} and {previous} alike ({steps.ratio_text(new_vs_previous)}): not the release"
        )
    severity = steps.as_severe_as_symptom(
        incident, limits.severity(found.change, "latency_ratio"), subject
    )
    numbers = steps.change_text(float(worst["current"]), float(worst["baseline"]), "seconds")
    return Finding(
        severity=severity,
        title=(
            f"On-device inference on {steps.join(found.culprits)} is "
            f"{steps.ratio_text(found.change)} its baseline p95 ({numbers}){versions}; other "
            f"backends and device classes {steps.ratio_text(found.others_change)}; {slowest_text}"
        ),
        subject=subject,
        metric="ondevice_inference_duration_seconds",
        observed=float(worst["current"]),
        baseline=float(worst["baseline"]),
        unit="seconds",
        cause=cause,
        recommendation=recommendation,
    )
