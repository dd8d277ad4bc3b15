"""model-load-failure, the judgement: which pattern the failed loads follow.

* a version that fails on every instance that tried it and loaded nowhere since (cause rollout,
  when the rollout step did not already name it);
* failures stuck on some instances while others load the same version fine: OOM there is about
  their memory limit (cause limit), another reason about those instances (cause instance);
* failures spread over the fleet while load durations rose for every version: the model store
  (cause dependency);
* failures that were retried and loaded, the instance ready now: transient, never a cause.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, Severity, format_value
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.model_load_failure_data import Loads, Now, median_since

THRESHOLDS = steps.Thresholds(
    "model-load-failure",
    # Failed loads of one pattern in the window.
    failures_critical=6,
    failures_warning=3,
    # An instance took part in a rollout's failures with this many failed loads since the onset.
    failures_moved=2,
    # Share of the instances not ready now that makes the readiness check critical.
    not_ready_share_critical=0.5,
    not_ready_share_warning=0.01,
    # Load duration p50 over the last minutes against its baseline (ratio).
    duration_ratio_critical=4.0,
    duration_ratio_warning=2.0,
    # Share of the instances with failures for a fleet-wide (store) pattern.
    spread_share=0.5,
)
RECENT_DURATIONS = timedelta(minutes=20)
# Failure samples closer than this belong to one run; the onset is the start of the last run.
RUN_GAP = pd.Timedelta(minutes=10)


@dataclass(frozen=True)
class Durations:
    """Load duration p50 per version, the last minutes against the baseline."""

    ratios: dict[str, float]  # version -> current / baseline (versions with a baseline)
    current: dict[str, float]
    baseline: dict[str, float]
    rose: tuple[str, ...]  # versions whose ratio reached duration_ratio_warning

    @property
    def rose_everywhere(self) -> bool:
        return bool(self.ratios) and len(self.rose) == len(self.ratios)


def failure_onset(frame: pd.DataFrame | None) -> pd.Timestamp | None:
    """The start of the last run of failed loads in the window (None without failures)."""
    if frame is None or frame.empty or "result" not in frame:
        return None
    failed = frame[(frame["result"] == "failure") & (frame["value"] > 0)]
    if failed.empty:
        return None
    stamps = pd.to_datetime(failed["timestamp"], utc=True).drop_duplicates().sort_values()
    onset = stamps.iloc[0]
    for previous, moment in zip(stamps.iloc[:-1], stamps.iloc[1:], strict=True):
        if moment - previous > RUN_GAP:
            onset = moment
    return pd.Timestamp(onset)


def rollback_command(service: str, model: str, target: str | None) -> str:
    if target is None:
        return (
            f"Roll {model} back to the last version that loaded everywhere (none in this "
            "window: widen it) and re-run this workbook."
        )
    return (
        f"Roll {model} back to {target}, the last version that loaded on every instance: "
        f"`kubectl set env deployment/{service} MODEL_VERSION={target}` (or pin {target} in "
        "the model registry), then watch model_ready come back on every instance."
    )


def judge_durations(
    incident: Incident, p50: QueryResult, *, end: pd.Timestamp, onset: pd.Timestamp | None
) -> Durations:
    """Record whether load durations rose against the baseline, for every version or some.

    A version the baseline day did not load (a canary rolled out since) is compared with its
    own durations before the failures began, when there are enough of them.
    """
    limits = THRESHOLDS.of(incident)
    current = median_since(p50.current, end - RECENT_DURATIONS, "model_version")
    start = pd.Timestamp(incident.window.start)
    baseline = median_since(p50.baseline, start, "model_version")
    if onset is not None and p50.current is not None and not p50.current.empty:
        stamps = pd.to_datetime(p50.current["timestamp"], utc=True)
        earlier = p50.current[stamps < onset - RECENT_DURATIONS]
        for version, value in median_since(earlier, start, "model_version").items():
            if version not in baseline and (earlier["model_version"] == version).sum() >= 5:
                baseline[version] = value
    ratios = {v: current[v] / baseline[v] for v in current if baseline.get(v, 0) > 0}
    rose = tuple(sorted(v for v, r in ratios.items() if r >= limits["duration_ratio_warning"]))
    found = Durations(ratios, current, baseline, rose)
    parts = ", ".join(
        f"{v} {steps.change_text(current[v], baseline[v], 'seconds')} ({r:.1f}x)"
        for v, r in sorted(ratios.items())
    )
    if not ratios:
        loading = steps.join(sorted(current)) or "none"
        title = (
            "Load durations: no version loading in the last 20 min has a baseline to compare "
            f"with (loading: {loading})"
        )
        severity = "info"
    elif found.rose_everywhere:
        worst = min(ratios.values())
        severity = limits.severity(worst, "duration_ratio")
        title = f"Load durations rose for every version (p50, last 20 min): {parts}"
    elif rose:
        severity = "info"
        title = f"Load durations rose only for {steps.join(rose)} (p50, last 20 min): {parts}"
    else:
        severity = "info"
        title = f"Load durations are as in the baseline (p50, last 20 min): {parts}"
    steps.checked(incident, f"load durations: {parts or 'no baseline'}")
    incident.record(
        Finding(
            severity=severity,
            title=title,
            subject={"model_version": list(rose)} if rose else {"service": incident.service},
            metric=p50.name,
            observed=max(current.values()) if current else None,
            unit="seconds",
        )
    )
    return found


def patterns(
    incident: Incident,
    loads: Loads,
    now: Now,
    named: set[str],
    timing: Durations,
    limit_by: dict[str, float],
) -> Iterator[Finding]:
    """One finding per failure reason the named versions do not explain."""
    failed = loads.failures[~loads.failures["model_version"].isin(named)]
    if failed.empty:
        steps.checked(incident, "failure patterns: no failed load beyond the named version")
        yield Finding(
            severity="info",
            title="No failed load beyond "
            + (f"those of {steps.join(sorted(named))}" if named else "none in the window"),
            subject={"service": incident.service},
        )
        return
    end = failed["last"].max()
    for reason, rows in failed.groupby("reason"):
        yield from _judge_reason(incident, str(reason), rows, loads, now, timing, limit_by, end)


def _judge_reason(
    incident: Incident,
    reason: str,
    rows: pd.DataFrame,
    loads: Loads,
    now: Now,
    timing: Durations,
    limit_by: dict[str, float],
    end: pd.Timestamp,
) -> Iterator[Finding]:
    limits = THRESHOLDS.of(incident)
    recent_cut = pd.Timestamp(incident.window.end) - pd.Timedelta(now.recent)
    per = rows.groupby("instance").agg(count=("count", "sum"), last=("last", "max"))
    stuck = sorted(
        i for i, row in per.iterrows() if i in now.not_ready or row["last"] >= recent_cut
    )
    recovered = sorted(set(per.index) - set(stuck))
    spread = len(per) >= limits["spread_share"] * max(len(now.instances), 1)
    if stuck and spread and timing.rose_everywhere:
        yield _store(incident, reason, rows, per, timing)
    elif stuck:
        yield _stuck(incident, reason, rows[rows["instance"].isin(stuck)], loads, limit_by)
    if recovered and not (stuck and spread and timing.rose_everywhere):
        yield _transient(incident, reason, rows[rows["instance"].isin(recovered)])


def _grade(incident: Incident, failures: float, subject: dict) -> Severity:
    severity = THRESHOLDS.of(incident).severity(failures, "failures")
    return steps.as_severe_as_symptom(incident, severity, subject)


def _store(
    incident: Incident, reason: str, rows: pd.DataFrame, per: pd.DataFrame, timing: Durations
) -> Finding:
    total = int(rows["count"].sum())
    subject = {"reason": reason, "instance": sorted(per.index)}
    rose = ", ".join(f"{v} {r:.1f}x" for v, r in sorted(timing.ratios.items()))
    steps.checked(incident, f"{reason}: spread over {len(per)} instances, durations up ({rose})")
    return Finding(
        severity=_grade(incident, total, subject),
        title=f"The model store is slow: {total} loads failed with {reason} on {len(per)} "
        f"instances ({steps.join(sorted(per.index))}) while load durations rose for every "
        f"version (p50 {rose})",
        detail="Every version loads slower, on every instance: the artifacts' source, not a "
        "version or an instance.",
        subject=subject,
        observed=float(total),
        unit="loads",
        cause="dependency",
        recommendation="Check the model store (object store or registry health, latency, "
        "throttling, the network path from the pods). Do not restart or roll out until it is "
        "fast again: every restart needs a load. Raise the load timeout only as a stop-gap.",
    )


def _stuck(
    incident: Incident, reason: str, rows: pd.DataFrame, loads: Loads, limit_by: dict[str, float]
) -> Finding:
    pods = sorted(rows["instance"].unique())
    versions = sorted(rows["model_version"].unique())
    total = int(rows["count"].sum())
    since = rows["first"].min()
    loaded = set().union(*(loads.loaded_by(v, since=since) for v in versions))
    fine = sorted(loaded - set(pods))
    if not loaded and set(pods) >= set().union(*(loads.tried(v) for v in versions)):
        return _version(incident, reason, rows, versions, pods, total)
    subject = {"instance": pods, "reason": reason}
    where = f"{total} loads failed with {reason} on {steps.join(pods)} since {since:%H:%M} UTC"
    if not fine and set(pods) >= set(loads.instances()):
        # Every instance fails now and then and loads in between, at the usual speed: neither
        # one instance nor a version nor (durations unchanged) clearly the store.
        steps.checked(incident, f"{reason}: on and off on every instance, durations as usual")
        return Finding(
            severity="warning",
            title=f"Loads fail on and off on every instance: {where}, and succeed in between "
            "at the usual speed",
            subject=subject,
            observed=float(total),
            unit="loads",
            recommendation=f"Read a load log for the {reason} (`kubectl logs {pods[0]}`) and "
            "check the model store's error rate.",
        )
    elsewhere = f", while {steps.join(fine)} loaded {steps.join(versions)} fine" if fine else ""
    if reason == "oom":
        return _oom(incident, rows, pods, fine, versions, where + elsewhere, limit_by)
    steps.checked(incident, f"{reason}: stuck on {steps.join(pods)}")
    return Finding(
        severity=_grade(incident, total, subject),
        title=f"Loads fail on {steps.join(pods)} only: {where}{elsewhere}",
        subject=subject,
        observed=float(total),
        unit="loads",
        cause="instance",
        recommendation=f"Read the load log there (`kubectl logs {pods[0]}`), then delete the "
        f"pods ({' '.join(pods)}) so they are rescheduled on other nodes.",
    )


def _oom(
    incident: Incident,
    rows: pd.DataFrame,
    pods: list[str],
    fine: list[str],
    versions: list[str],
    text: str,
    limit_by: dict[str, float],
) -> Finding:
    small = [limit_by[p] for p in pods if p in limit_by]
    roomy = [limit_by[p] for p in fine if p in limit_by]
    subject = {"instance": pods, "reason": "oom"}
    total = int(rows["count"].sum())
    if small and roomy and max(small) < min(roomy):
        limit = (
            f": {'its' if len(pods) == 1 else 'their'} memory limit is "
            f"{format_value(max(small), 'bytes')}, against "
            f"{format_value(min(roomy), 'bytes')} where it loads"
        )
        need = f"{math.ceil(min(roomy) / 2**30)}Gi"
        fix = (
            f"Give {steps.join(pods)} the memory the load needs, as on {steps.join(fine)}: "
            f"`kubectl set resources deployment/{incident.service} --limits=memory={need}` "
            "(or move them back to the larger node pool). Not a version problem: the same "
            "version loads where the limit is larger."
        )
    else:
        limit = ": these instances run out of memory while loading"
        fix = (
            f"Raise the memory limit of {steps.join(pods)} above the load's peak, or lower the "
            "peak (load the weights memory-mapped or in shards)."
        )
    steps.checked(incident, f"oom: on {steps.join(pods)} only{limit}")
    return Finding(
        severity=_grade(incident, total, subject),
        title=f"Out of memory at load on {steps.join(pods)} only{limit} ({text})",
        subject=subject,
        observed=max(small) if small else None,
        baseline=min(roomy) if roomy else None,
        unit="bytes",
        cause="limit",
        recommendation=fix,
    )


def _version(
    incident: Incident,
    reason: str,
    rows: pd.DataFrame,
    versions: list[str],
    pods: list[str],
    total: int,
) -> Finding:
    subject = {"model_version": versions, "reason": reason, "instance": pods}
    steps.checked(incident, f"{reason}: {steps.join(versions)} loads nowhere")
    return Finding(
        severity=_grade(incident, total, subject),
        title=f"{steps.join(versions)} fails to load on every instance that tried it "
        f"({steps.join(pods)}): {total} loads failed with {reason}, none succeeded",
        subject=subject,
        observed=float(total),
        unit="loads",
        cause="rollout",
        recommendation=f"Roll back from {steps.join(versions)} (see the rollback target in 3.3); "
        f"check the artifact ({reason}) before rolling it out again.",
    )


def _transient(incident: Incident, reason: str, rows: pd.DataFrame) -> Finding:
    pods = sorted(rows["instance"].unique())
    total = int(rows["count"].sum())
    severity = THRESHOLDS.of(incident).severity(total, "failures")
    severity = "warning" if severity == "critical" else severity
    steps.checked(incident, f"{reason} on {steps.join(pods)}: transient, recovered")
    return Finding(
        severity=severity,
        title=f"Transient: {total} load(s) failed with {reason} on {steps.join(pods)} between "
        f"{rows['first'].min():%H:%M} and {rows['last'].max():%H:%M} UTC; retried, loaded, "
        "ready now",
        subject={"instance": pods, "reason": reason},
        observed=float(total),
        unit="loads",
        recommendation=None
        if severity == "info"
        else f"No action now; if it recurs, read the load log of {pods[0]} for the {reason}.",
    )
