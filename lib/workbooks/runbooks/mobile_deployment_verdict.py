"""Model downloads of a mobile release, and the verdict: halt the rollout or not.

Downloads fail for the new version only (the release ships a bad model URL, manifest or
signature: halt it) or for every version (the model store or CDN: do not halt). The verdict
says, in the store's own terms, whether to stop the rollout and at what share it stands.
"""

from __future__ import annotations

import math

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.mobile_deployment_platform import (
    Release,
    count_text,
    means,
    platform_of,
    since_release,
    totals,
)


def downloads(
    incident: Incident, found: Release, failures: QueryResult, volume: QueryResult
) -> None:
    """3.4: the share of model downloads failing per version, the new one against the previous
    one and each against its own baseline."""
    if failures.empty:
        steps.checked(incident, "model downloads: no data")
        return
    incident.timeseries(failures, by="app_version", onset=found.since)
    since = since_release(incident, found)
    now = means(failures.current, by=["app_version"], since=since)
    before = means(failures.baseline, by=["app_version"], since=since)
    counted = totals(volume.current, by=["app_version"], since=since)
    shares = {str(version): float(share) for version, share in now.items()}
    text = ", ".join(
        f"{version} {format_value(share, 'ratio')} of {count_text(counted.get(version, 0.0))}"
        for version, share in shares.items()
    )
    steps.checked(incident, f"model downloads failing: {text}")
    limits = platform_of(incident).thresholds.of(incident)
    failing = [v for v, share in shares.items() if share >= limits["download_failure_warning"]]
    new_share = shares.get(str(found.new), math.nan)
    old_share = shares.get(str(found.previous), math.nan)
    if found.new in failing and not new_share < limits["download_vs_previous"] * old_share:
        incident.record(_new_version_fails(incident, found, new_share, old_share))
    elif failing and len(failing) == len(shares):
        incident.record(_every_version_fails(incident, failing, shares, before))
    else:
        incident.record(
            Finding(
                severity="info",
                title=f"Model downloads are healthy: failing {text} downloads",
                subject={"app_version": list(shares)},
                metric=failures.name,
                unit="ratio",
            )
        )


def _new_version_fails(
    incident: Incident, found: Release, new_share: float, old_share: float
) -> Finding:
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    subject = {"app_version": str(found.new)}
    severity = steps.as_severe_as_symptom(
        incident, limits.severity(new_share, "download_failure"), subject
    )
    return Finding(
        severity=severity,
        title=(
            f"Model downloads fail for {found.new}: {format_value(new_share, 'ratio')} of "
            f"downloads against {format_value(old_share, 'ratio')} on {found.previous}"
        ),
        subject=subject,
        metric="ondevice_model_downloads_total",
        observed=new_share,
        baseline=old_share,
        unit="ratio",
        cause="rollout",
        recommendation=platform.halt(str(found.new), found.share)
        + f" Check the model URL, manifest and signature {found.new} ships against the model "
        "store's access logs for its requests.",
    )


def _every_version_fails(
    incident: Incident, failing: list[str], shares: dict[str, float], before: pd.Series
) -> Finding:
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    worst = max(shares.values())
    earlier = [float(before.get(version, math.nan)) for version in failing]
    was = format_value(min(earlier), "ratio") if not any(map(math.isnan, earlier)) else "n/a"
    return Finding(
        severity=limits.severity(worst, "download_failure"),
        title=(
            f"Model downloads fail on every app version ({', '.join(failing)}; up to "
            f"{format_value(worst, 'ratio')}, a day earlier {was}): the model store or CDN, "
            "not the release"
        ),
        subject={"app_version": failing},
        metric="ondevice_model_downloads_total",
        observed=worst,
        unit="ratio",
        cause="dependency",
        recommendation=f"Do not halt the {platform.rollout_word}. Check the model store and "
        "CDN the apps download from (status, certificates, quotas, a changed path).",
    )


def resolution(incident: Incident, found: Release) -> None:
    """Section 4: the verdict if no cause was named, the checklist, and the rollout decision."""
    steps.conclude(
        incident,
        quiet=(
            f"A quiet run: crash-free sessions of {found.new or 'the new version'} match the "
            "previous version on every OS version and device class, crashes per session are "
            "within their baseline, on-device latency and model downloads are normal. The "
            "alert's threshold may be too tight for this app's normal crash rate."
        ),
        next_steps=[
            "Widen the window (`lookback='6h'`) and compare with a week ago (`baseline='7d'`).",
            "Read the top crash signatures of the new version in the crash reporter.",
            "Check server-side changes (API, remote config, served models) near the alert.",
        ],
    )
    incident.markdown(rollout_decision(incident, found))


def rollout_decision(incident: Incident, found: Release) -> str:
    """Halt the rollout or not, in the store's own terms, from the cause findings."""
    platform = platform_of(incident)
    share = f"{found.share * 100:.0f}%" if found.share is not None else "an unknown share"
    causes = [f for f in incident.findings if f.cause is not None and f.severity != "info"]
    blamed = [f for f in causes if f.cause == "rollout"]
    if blamed:
        return f"**Rollout decision: stop it.** {platform.halt(str(found.new), found.share)}"
    if causes:
        return (
            f"**Rollout decision: do not halt** the {platform.rollout_word} of {found.new} "
            f"(at {share}): what was found is not the release ({causes[0].title})."
        )
    return (
        f"**Rollout decision: no reason found here to halt** the {platform.rollout_word} of "
        f"{found.new or 'the new version'} (at {share}); watch crash-free sessions against the "
        "previous version before its next step."
    )
