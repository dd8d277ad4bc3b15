"""low-disk-space: which filesystem of the host fills, by bytes or inodes, how fast, and why.

Cells of ``notebooks/low-disk-space.ipynb`` call these steps in order; each records findings on
the incident. Host alerts carry ``instance``, ``mountpoint`` and ``device`` (no ``service``):
every filesystem of the alert's ``instance`` is read, each judged against its own history
(:mod:`workbooks.runbooks.low_disk_space_fs`), so a volume that is always 88% full is not
blamed for its size while a small one fills. Thresholds are declared in :data:`THRESHOLDS`; a
team overrides them under ``runbooks: {low-disk-space: {thresholds: ...}}``.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from workbooks.core.config import now
from workbooks.core.findings import Finding, Severity
from workbooks.notebook import charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.low_disk_space_fs import Filesystem, Usage, filesystems, hours
from workbooks.runbooks.low_disk_space_text import (
    bytes_advice,
    from_version,
    inodes_advice,
    pct,
    size_text,
    state,
)

THRESHOLDS = steps.Thresholds(
    "low-disk-space",
    # Share of a filesystem's bytes (or inodes) used: 3% left is critical (node-mixin's level).
    used_share_critical=0.97,
    used_share_warning=0.90,
    # Hours until full at the current pace: critical within 4 h, warning within a day.
    hours_to_full_critical=4.0,
    hours_to_full_warning=24.0,
)
# A download this close after a model version appeared is that version's weights.
DOWNLOAD_NEAR = timedelta(minutes=15)
# A projected time to full is drawn at most this far ahead, so the window stays readable.
PROJECTION_HORIZON = timedelta(hours=24)


def read(
    incident: Incident,
    used: QueryResult,
    avail: QueryResult,
    size: QueryResult,
    inodes: QueryResult,
    files_free: QueryResult,
    readonly: QueryResult,
) -> list[Filesystem]:
    """Every filesystem of the alert's host, judged from its own series; most urgent first.

    Points after "now" are dropped from the results (in place, so the charts below agree): a
    window that ends in the future (an alert younger than five minutes) gets Prometheus' last
    sample repeated there, a flat tail that would turn growth into a step.
    """
    for result in (used, avail, size, inodes, files_free, readonly):
        result.current = _measured(incident, result.current)
    if used.empty or avail.empty or size.empty:
        steps.checked(incident, "filesystems: no data for the host's filesystems")
        return []
    found = filesystems(
        used.current,
        used.baseline,
        avail.current,
        size.current,
        inodes.current,
        inodes.baseline,
        files_free.current,
        readonly.current,
    )
    steps.checked(incident, f"filesystems: {len(found)} on {_host(incident)}")
    return found


def _measured(incident: Incident, frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    cutoff = pd.Timestamp(now(incident.config))
    return frame[pd.to_datetime(frame["timestamp"], utc=True) <= cutoff]


def grade(fs: Filesystem, usage: Usage | None, incident: Incident) -> Severity:
    """The worse of how full ``usage`` is and how soon it will be full at its current pace."""
    if usage is None:
        return "info"
    limits = THRESHOLDS.of(incident)
    by_share = limits.severity(usage.share, "used_share")
    by_time = limits.severity(hours(usage.time_to_full), "hours_to_full", direction="down")
    return min(by_share, by_time, key=("critical", "warning", "info").index)


def still_happening(incident: Incident, disks: list[Filesystem]) -> None:
    """Section 2: the alert's filesystem now: how full, filling or not, read-only or not."""
    if not disks:
        steps.symptom(incident, ongoing=True)
        return
    named = incident.labels.get("mountpoint")
    fs = next((d for d in disks if d.mountpoint == named), disks[0])
    worst = _worst_resource(fs, incident)
    severity = "critical" if fs.readonly else grade(fs, worst, incident)
    now = state(fs, worst)
    title = (
        f"Still happening: {now}"
        if severity != "info"
        else f"Not urgent now: {now}; below the "
        f"{pct(THRESHOLDS.of(incident)['used_share_warning'])} warning level and not filling"
    )
    finding = Finding(
        severity=severity,
        title=title,
        subject=_subject(incident, fs),
        metric="low_disk_space_used_share",
        observed=worst.share,
        baseline=worst.baseline_share,
        unit="ratio",
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=severity != "info", finding=finding)
    steps.checked(incident, f"still happening: {'yes' if severity != 'info' else 'no'} ({now})")


def overview(incident: Incident, disks: list[Filesystem], used: QueryResult) -> None:
    """Section 3.1: the share used per mountpoint against its baseline, the warning level drawn."""
    if used.empty:
        incident.timeseries(used)
        return
    top = disks[0] if disks else None
    incident.show(
        charts.timeseries(
            used.current,
            baseline=used.baseline,
            by="mountpoint",
            title=incident.chart_title("Share of bytes used by mountpoint (dashed: baseline)"),
            unit="ratio",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=top.bytes.onset if top is not None else None,
            limit=THRESHOLDS.of(incident)["used_share_warning"],
            limit_label="warning level",
        )
    )


def inodes_overview(incident: Incident, inodes: QueryResult) -> None:
    """Section 3.1: the share of inodes used per mountpoint, against its baseline."""
    incident.timeseries(
        inodes, by="mountpoint", limit=THRESHOLDS.of(incident)["used_share_warning"]
    )


def projection(incident: Incident, disks: list[Filesystem], avail: QueryResult) -> None:
    """Section 3.2: the most urgent filesystem's bytes used, projected to full at its pace."""
    top = next((d for d in disks if d.bytes.time_to_full is not None), None)
    if top is None or avail.empty:
        steps.checked(incident, "projection: no filesystem is heading for full by bytes")
        return
    frame = avail.current[avail.current["mountpoint"] == top.mountpoint]
    series = frame.set_index(pd.DatetimeIndex(frame["timestamp"]))["value"].astype(float)
    lines = pd.DataFrame({top.mountpoint: top.size_bytes - series})
    ttl = top.bytes.time_to_full
    last = lines.index[-1]
    ahead = min(ttl, pd.Timedelta(PROJECTION_HORIZON))
    end_value = top.size_bytes - top.avail_bytes + top.bytes.per_hour * ahead.total_seconds() / 3600
    projected = pd.Series(
        [lines.iloc[-1, 0], end_value], index=pd.DatetimeIndex([last, last + ahead])
    )
    lines = lines.reindex(lines.index.union(projected.index))
    full_at = pd.Timestamp(incident.window.end) + ttl
    lines[f"projected (full {full_at:%H:%M} UTC)"] = projected
    incident.show(
        charts.timeseries(
            lines,
            title=incident.chart_title(f"Bytes used on {top.mountpoint}, projected to full"),
            unit="bytes",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=top.bytes.onset,
            limit=top.size_bytes,
            limit_label="size",
        )
    )


def what_changed(
    incident: Incident, disks: list[Filesystem], versions: QueryResult | None
) -> dict[str, str]:
    """Section 3.3: did a model rollout download weights? mountpoint -> the version downloaded.

    Context, never a cause on its own: a download is judged in :func:`culprits` by whether it
    leaves the filesystem near full, like any other growth.
    """
    if versions is None or versions.empty:
        steps.checked(incident, "rollouts: no model versions to read (no service label)")
        return {}
    found = steps.rollouts(versions.current)
    if not found:
        steps.checked(incident, "rollouts: no model version rolled out in the window")
        return {}
    downloads: dict[str, str] = {}
    for rollout in found:
        stepped = [
            fs
            for fs in disks
            if fs.bytes.shape == "step"
            and fs.bytes.onset is not None
            and abs(fs.bytes.onset.at - rollout.at) <= DOWNLOAD_NEAR
        ]
        for fs in stepped:
            downloads[fs.mountpoint] = rollout.version
        where = (
            "; "
            + ", ".join(f"{fs.mountpoint} jumped by {size_text(fs.bytes.step)}" for fs in stepped)
            + " right after (its weights downloaded)"
            if stepped
            else "; no filesystem jumped near it"
        )
        incident.record(
            Finding(
                severity="info",
                title=f"Model {rollout.version} rolled out at {rollout.at:%H:%M} UTC on "
                f"{steps.join(rollout.units)}{where}",
                subject={"model_version": rollout.version},
                metric=versions.name,
            )
        )
    return downloads


def culprits(
    incident: Incident, disks: list[Filesystem], downloads: dict[str, str] | None = None
) -> None:
    """Section 3.4: every filesystem at risk, most urgent first, each with what to do."""
    downloads = downloads or {}
    quiet = []
    for fs in disks:
        finding = _finding(incident, fs, downloads.get(fs.mountpoint))
        if finding is not None:
            incident.record(finding)
        else:
            steps.checked(incident, f"{fs.mountpoint}: {state(fs, _worst_resource(fs, incident))}")
        if finding is None or finding.severity == "info":
            quiet.append(fs)
    if quiet and len(quiet) < len(disks):
        # The blast radius, and why the fullest volume is not blamed for its size.
        listed = "; ".join(
            f"{fs.mountpoint} {pct(fs.bytes.share)} ({fs.bytes.shape})"
            for fs in sorted(quiet, key=lambda d: -d.bytes.share)
        )
        incident.record(
            Finding(
                severity="info",
                title=f"{len(disks) - len(quiet)} of {len(disks)} filesystems of {_host(incident)} "
                f"at risk; the others are not filling or near full: {listed}",
                subject={"instance": _host(incident)},
                metric="low_disk_space_used_share",
            )
        )


def _finding(incident: Incident, fs: Filesystem, version: str | None) -> Finding | None:
    if fs.readonly:
        return _readonly_finding(incident, fs)
    worst = _worst_resource(fs, incident)
    severity = grade(fs, worst, incident)
    if severity == "info":
        if fs.bytes.shape == "step":
            return Finding(
                severity="info",
                title=f"{fs.mountpoint} jumped by {size_text(fs.bytes.step)} at "
                f"{fs.bytes.onset.at:%H:%M} UTC{from_version(version)}, then flat; "
                f"{pct(fs.bytes.share)} used: not at risk",
                subject=_subject(incident, fs),
                metric="low_disk_space_avail_bytes",
            )
        return None
    inodes = worst is fs.inodes
    host, end = _host(incident), incident.window.end
    return Finding(
        severity=severity,
        title=state(fs, worst, version=version),
        subject=_subject(incident, fs),
        metric="low_disk_space_inodes_used_share" if inodes else "low_disk_space_used_share",
        observed=worst.share,
        baseline=worst.baseline_share,
        unit="ratio",
        recommendation=(
            inodes_advice(host, fs, end) if inodes else bytes_advice(host, fs, version, end)
        ),
        cause="limit",
    )


def _readonly_finding(incident: Incident, fs: Filesystem) -> Finding:
    host, mp = _host(incident), fs.mountpoint
    return Finding(
        severity="critical",
        title=f"{mp} on {host} was remounted read-only at {fs.readonly_since:%H:%M} UTC: every "
        f"write fails ({pct(fs.bytes.share)} used, not a space problem)",
        detail="The kernel remounts a filesystem read-only after I/O or filesystem errors; "
        "applications then fail as if the disk were full.",
        subject=_subject(incident, fs),
        metric="low_disk_space_readonly",
        observed=1.0,
        baseline=0.0,
        recommendation=f"Drain {host}, read `dmesg -T | grep -iE 'I/O error|EXT4-fs error|XFS'` "
        f"there, then fsck the device and `sudo mount -o remount,rw {mp}`, or replace the disk.",
        cause="instance",
    )


def _worst_resource(fs: Filesystem, incident: Incident) -> Usage:
    """Bytes or inodes, whichever is graded worse (bytes on a tie)."""
    if fs.inodes is None:
        return fs.bytes
    order = ("critical", "warning", "info")
    by_bytes = order.index(grade(fs, fs.bytes, incident))
    by_inodes = order.index(grade(fs, fs.inodes, incident))
    return fs.inodes if by_inodes < by_bytes else fs.bytes


def resolution(incident: Incident, disks: list[Filesystem]) -> None:
    """Section 4: the verdict if no filesystem is at risk, and the steps that fit the findings."""
    named = incident.labels.get("mountpoint")
    shown = next((d for d in disks if d.mountpoint == named), None)
    shown = shown or (max(disks, key=lambda d: d.bytes.share) if disks else None)
    level = (
        f"{shown.mountpoint} is {pct(shown.bytes.share)} used and {shown.bytes.shape} "
        f"(baseline {pct(shown.bytes.baseline_share)})"
        if shown is not None
        else "no filesystem was read"
    )
    steps.conclude(
        incident,
        quiet=(
            f"A quiet run: no filesystem of {_host(incident)} is filling, near full or read-only; "
            f"{level}. The alert's threshold may be below this volume's normal level."
        ),
        next_steps=[
            "Widen the window (`lookback='12h'`): slow growth shows over hours.",
            f"On {_host(incident)}, `df -h` and `df -i` for filesystems this query excludes.",
            "Check for deleted files still held open: `sudo lsof +L1`.",
        ],
    )


def _host(incident: Incident) -> str:
    return incident.labels.get("instance", "the host")


def _subject(incident: Incident, fs: Filesystem) -> dict[str, str]:
    return {"mountpoint": fs.mountpoint, "instance": _host(incident)}
