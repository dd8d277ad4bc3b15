"""low-disk-space: which filesystem of the host fills, by bytes or inodes, how fast, and why.

Cells of ``notebooks/low-disk-space.ipynb`` call these steps in order; each records findings on
the incident. Host alerts carry ``instance``, ``mountpoint`` and ``device`` (no ``service``):
every filesystem of the alert's ``instance`` is read, each judged against its own history
(:mod:`workbooks.runbooks.low_disk_space_fs`), so a volume that is always 88% full is not
blamed for its size while a small one fills. Thresholds are declared in :data:`THRESHOLDS`; a
team overrides them under ``runbooks: {low-disk-space: {thresholds: ...}}``.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, Severity, format_value
from workbooks.notebook import charts
from workbooks.notebook.display import human_duration
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.low_disk_space_fs import Filesystem, Usage, filesystems, hours

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
    """Every filesystem of the alert's host, judged from its own series; most urgent first."""
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
    state = _state(fs, worst)
    title = (
        f"Still happening: {state}"
        if severity != "info"
        else f"Not urgent now: {state}; below {_pct(THRESHOLDS.of(incident)['used_share_warning'])}"
        " and not filling"
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
    steps.checked(incident, f"still happening: {'yes' if severity != 'info' else 'no'} ({state})")


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
    lines[f"projected: full {_when(incident, ttl)}"] = projected
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
            + ", ".join(f"{fs.mountpoint} jumped by {_bytes(fs.bytes.step)}" for fs in stepped)
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
    for fs in disks:
        finding = _finding(incident, fs, downloads.get(fs.mountpoint))
        if finding is not None:
            incident.record(finding)
        else:
            steps.checked(incident, f"{fs.mountpoint}: {_state(fs, _worst_resource(fs, incident))}")


def _finding(incident: Incident, fs: Filesystem, version: str | None) -> Finding | None:
    if fs.readonly:
        return _readonly_finding(incident, fs)
    worst = _worst_resource(fs, incident)
    severity = grade(fs, worst, incident)
    if severity == "info":
        if fs.bytes.shape == "step":
            return Finding(
                severity="info",
                title=f"{fs.mountpoint} jumped by {_bytes(fs.bytes.step)} at "
                f"{fs.bytes.onset.at:%H:%M} UTC{_from(version)}, then flat; "
                f"{_pct(fs.bytes.share)} used: not at risk",
                subject=_subject(incident, fs),
                metric="low_disk_space_avail_bytes",
            )
        return None
    inodes = worst is fs.inodes
    return Finding(
        severity=severity,
        title=_state(fs, worst, version=version),
        subject=_subject(incident, fs),
        metric="low_disk_space_inodes_used_share" if inodes else "low_disk_space_used_share",
        observed=worst.share,
        baseline=worst.baseline_share,
        unit="ratio",
        recommendation=(
            _inodes_advice(incident, fs) if inodes else _bytes_advice(incident, fs, version)
        ),
        cause="limit",
    )


def _readonly_finding(incident: Incident, fs: Filesystem) -> Finding:
    host, mp = _host(incident), fs.mountpoint
    return Finding(
        severity="critical",
        title=f"{mp} on {host} was remounted read-only at {fs.readonly_since:%H:%M} UTC: every "
        f"write fails ({_pct(fs.bytes.share)} used, not a space problem)",
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


def _state(fs: Filesystem, usage: Usage, *, version: str | None = None) -> str:
    """One sentence: what is happening to this filesystem, with its numbers."""
    mp = fs.mountpoint
    if fs.readonly:
        return f"{mp} is read-only since {fs.readonly_since:%H:%M} UTC"
    inodes = usage is fs.inodes
    what = "inodes" if inodes else "bytes"
    full = (
        f"full in about {human_duration(usage.time_to_full)}"
        if usage.time_to_full is not None
        else "not heading for full"
    )
    if usage.shape == "growing":
        pace = f"{_count(usage.per_hour)} inodes/h" if inodes else f"{_bytes(usage.per_hour)}/h"
        since = f" since {usage.onset.at:%H:%M} UTC" if usage.onset is not None else ""
        text = f"{mp} fills by {what} at {pace}{since}: {_pct(usage.share)} used, {full}"
        if inodes:
            text += f", while only {_pct(fs.bytes.share)} of its bytes are used"
        return text
    if usage.shape == "step" and usage.onset is not None:
        amount = _count(usage.step) + " inodes" if inodes else _bytes(usage.step)
        return (
            f"{mp} jumped by {amount} at {usage.onset.at:%H:%M} UTC{_from(version)} (a large "
            f"download or copy), then {'kept growing' if usage.time_to_full else 'flat'}: "
            f"{_pct(usage.share)} of its {what} used, {full}"
        )
    return (
        f"{mp} is {_pct(usage.share)} full by {what} and flat (baseline "
        f"{_pct(usage.baseline_share)}): {full}"
    )


def _bytes_advice(incident: Incident, fs: Filesystem, version: str | None) -> str:
    host, mp = _host(incident), fs.mountpoint
    if fs.bytes.shape == "step" and fs.bytes.onset is not None:
        look = (
            f"find the large new files: `sudo find {mp} -xdev -newermt "
            f"'{fs.bytes.onset.at - pd.Timedelta(minutes=5):%Y-%m-%d %H:%M}' -size +100M "
            "-exec ls -lh {} +`"
        )
    else:
        look = f"find what grows: `sudo du -xh --max-depth=2 {mp} | sort -h | tail -20`"
    if version is not None:
        hint = (
            f"model {version} was just downloaded here: delete the weights of versions no "
            "longer served from the model cache"
        )
    elif "log" in mp:
        hint = (
            "logs: check logrotate and a log level left at debug; "
            "`sudo journalctl --vacuum-size=1G`"
        )
    elif "model" in mp or "cache" in mp:
        hint = "model cache: delete the weights of versions no longer served"
    else:
        hint = "usual suspects: logs (/var/log), model caches, core dumps, container images"
    ttl = fs.bytes.time_to_full
    deadline = f" before it is full ({_when(incident, ttl)})" if ttl is not None else ""
    return (
        f"On {host}, {look}; {hint}. Free space or grow the volume (resize2fs / xfs_growfs)"
        f"{deadline}."
    )


def _inodes_advice(incident: Incident, fs: Filesystem) -> str:
    host, mp = _host(incident), fs.mountpoint
    ttl = fs.inodes.time_to_full if fs.inodes is not None else None
    deadline = f" before they run out ({_when(incident, ttl)})" if ttl is not None else ""
    return (
        f"On {host}, find the directories holding the most files: `sudo find {mp} -xdev -type f "
        f"| cut -d/ -f1-5 | sort | uniq -c | sort -n | tail`; delete the small files (caches, "
        f"sessions, spool){deadline}, and prune them on a schedule. Bytes are free: growing the "
        "volume does not help unless the filesystem is recreated with more inodes (mkfs -N)."
    )


def resolution(incident: Incident, disks: list[Filesystem]) -> None:
    """Section 4: the verdict if no filesystem is at risk, and the steps that fit the findings."""
    fullest = max(disks, key=lambda d: d.bytes.share) if disks else None
    state = (
        f"the fullest, {fullest.mountpoint}, is {_pct(fullest.bytes.share)} used, "
        f"{'flat' if fullest.bytes.shape == 'flat' else fullest.bytes.shape}"
        if fullest is not None
        else "no filesystem was read"
    )
    steps.conclude(
        incident,
        quiet=(
            f"A quiet run: no filesystem of {_host(incident)} is filling, near full or read-only; "
            f"{state}, as in its baseline. The alert's threshold may be below this volume's "
            "normal level."
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


def _when(incident: Incident, ttl: pd.Timedelta | None) -> str:
    if ttl is None:
        return "not heading for full"
    at = pd.Timestamp(incident.window.end) + ttl
    return f"in about {human_duration(ttl)}, at {at:%H:%M} UTC"


def _from(version: str | None) -> str:
    return f", when model {version} rolled out" if version else ""


def _pct(share: float) -> str:
    return "n/a" if share is None or not math.isfinite(share) else f"{share:.0%}"


def _bytes(amount: float) -> str:
    return format_value(amount, "bytes")


def _count(amount: float) -> str:
    return f"{amount:,.0f}"
