"""Crashes of a mobile release: the new version against the previous one, where, and whether
the release is to blame at all.

Crash rates are crashes per session, each slice (an OS version, a device class) weighed by its
own sessions: a small OS version whose crash rate jumped on the new version is the culprit even
when a large OS version has more crashes in absolute numbers. The previous version, over the same
minutes, is the yardstick of the new one; each version's own baseline (a day earlier) tells a
release problem from crashes rising on every version alike (a server-side change, an OS update).
"""

from __future__ import annotations

import math

import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook import charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.mobile_deployment_platform import (
    Release,
    count_text,
    crash_free_text,
    platform_of,
    since_release,
    spoken,
    totals,
)


def crash_table(
    sessions: pd.DataFrame,
    crashes: pd.DataFrame,
    *,
    by: str,
    new: str,
    previous: str,
    since: pd.Timestamp,
    min_sessions: float,
    min_crashes: float,
) -> pd.DataFrame:
    """Per value of `by`: the new version's crash rate (``current``) against the previous one's
    (``baseline``) over the same minutes, with the sessions and crashes behind each.

    Columns ``[by, sessions, crashes, current, previous_sessions, baseline, ratio, delta,
    judged, all_crashes]``. A slice is ``judged`` only with ``min_sessions`` on both versions
    and ``min_crashes`` on the new one; otherwise its ratio is NaN (too little to tell).
    """
    counted_sessions = totals(sessions, by=["app_version", by], since=since)
    counted_crashes = totals(crashes, by=["app_version", by], since=since)
    rows = []
    values = sorted({str(key[1]) for key in counted_sessions.index if str(key[0]) == new})
    for value in values:
        new_sessions = float(counted_sessions.get((new, value), 0.0))
        new_crashes = float(counted_crashes.get((new, value), 0.0))
        old_sessions = float(counted_sessions.get((previous, value), 0.0))
        old_crashes = float(counted_crashes.get((previous, value), 0.0))
        current = new_crashes / new_sessions if new_sessions else math.nan
        baseline = old_crashes / old_sessions if old_sessions else math.nan
        judged = (
            new_sessions >= min_sessions
            and old_sessions >= min_sessions
            and new_crashes >= min_crashes
            and baseline > 0
        )
        every = float(counted_crashes[[key[1] == value for key in counted_crashes.index]].sum())
        rows.append(
            {
                by: value,
                "sessions": new_sessions,
                "crashes": new_crashes,
                "current": current,
                "previous_sessions": old_sessions,
                "baseline": baseline,
                "ratio": current / baseline if judged else math.nan,
                "delta": current - baseline,
                "judged": judged,
                "all_crashes": every,
            }
        )
    columns = [by, "sessions", "crashes", "current", "previous_sessions", "baseline"]
    columns += ["ratio", "delta", "judged", "all_crashes"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values("ratio", ascending=False, na_position="last").reset_index(drop=True)


def version_ratio(table: pd.DataFrame) -> float | None:
    """The new version's crashes per session against the previous one's, over every slice."""
    if table.empty or table["sessions"].sum() <= 0 or table["previous_sessions"].sum() <= 0:
        return None
    new = table["crashes"].sum() / table["sessions"].sum()
    old = (table["baseline"] * table["previous_sessions"]).sum() / table["previous_sessions"].sum()
    return float(new / old) if old > 0 else None


def crash_free(
    incident: Incident, release: Release, sessions: QueryResult, crashes: QueryResult
) -> None:
    """3.1: crash-free sessions per version, the new one against the previous one and each
    against its own baseline; names an outside cause when every version rose alike."""
    if sessions.empty or crashes.empty:
        steps.checked(incident, "crash-free sessions by version: no data")
        return
    since = since_release(incident, release)
    incident.show(_rate_chart(incident, release, sessions, crashes))
    now = _per_version(sessions.current, crashes.current, since)
    before = _per_version(sessions.baseline, crashes.baseline, since)
    lines = [
        "| app version | sessions | crash-free now | crash-free a day earlier |",
        "|---|---|---|---|",
    ]
    for version in release.versions:
        counted, rate = now.get(version, (0.0, math.nan))
        earlier = before.get(version, (0.0, math.nan))[1]
        lines.append(
            f"| {version} | {count_text(counted)} | {crash_free_text(rate)} | "
            f"{crash_free_text(earlier)} |"
        )
    incident.markdown("\n".join(lines))
    ratio = None
    if release.compared:
        ratio = _record_versions(incident, release, now)
    _outside_cause(incident, release, now, before, ratio)


def _per_version(
    sessions: pd.DataFrame | None, crashes: pd.DataFrame | None, since: pd.Timestamp
) -> dict[str, tuple[float, float]]:
    counted = totals(sessions, by=["app_version"], since=since)
    crashed = totals(crashes, by=["app_version"], since=since)
    return {
        str(version): (float(n), float(crashed.get(version, 0.0)) / n if n else math.nan)
        for version, n in counted.items()
    }


def _rate_chart(
    incident: Incident, release: Release, sessions: QueryResult, crashes: QueryResult
) -> charts.Chart:
    def rate(s: pd.DataFrame | None, c: pd.DataFrame | None) -> pd.DataFrame | None:
        if s is None or c is None or s.empty or c.empty:
            return None
        keys = ["timestamp", "app_version"]
        joined = s.merge(c, on=keys, suffixes=("_s", "_c"))
        per = joined["value_c"].astype(float) / joined["value_s"].astype(float).where(
            joined["value_s"].astype(float) > 0
        )
        return joined[keys].assign(value=per)

    return charts.timeseries(
        rate(sessions.current, crashes.current),
        baseline=rate(sessions.baseline, crashes.baseline),
        by="app_version",
        title=incident.chart_title("Crashes per session by app version (dashed: a day earlier)"),
        unit="ratio",
        alert_start=pd.Timestamp(incident.starts_at),
        onset=release.since,
    )


def _record_versions(
    incident: Incident, release: Release, now: dict[str, tuple[float, float]]
) -> float | None:
    limits = platform_of(incident).thresholds.of(incident)
    new_sessions, new_rate = now.get(str(release.new), (0.0, math.nan))
    old_rate = now.get(str(release.previous), (0.0, math.nan))[1]
    ratio = new_rate / old_rate if old_rate and not math.isnan(new_rate) else None
    judged = new_sessions >= limits["min_sessions"] and ratio is not None
    severity = limits.severity(ratio, "crash_ratio") if judged else "info"
    steps.checked(
        incident,
        f"crash-free sessions: {release.new} {crash_free_text(new_rate)}, "
        f"{release.previous} {crash_free_text(old_rate)}",
    )
    incident.record(
        Finding(
            severity=severity,
            title=(
                f"Crash-free sessions: {release.new} {crash_free_text(new_rate)} of "
                f"{count_text(new_sessions)} sessions against {crash_free_text(old_rate)} on "
                f"{release.previous} ({steps.ratio_text(ratio)} the crashes per session)"
            ),
            subject={"app_version": str(release.new)},
            metric="crashes per session",
            observed=new_rate,
            baseline=old_rate,
            unit="ratio",
        )
    )
    return ratio if judged else None


def _outside_cause(
    incident: Incident,
    release: Release,
    now: dict[str, tuple[float, float]],
    before: dict[str, tuple[float, float]],
    new_vs_previous: float | None,
) -> None:
    """Every version that has a baseline rose alike and the new one no more: not the release."""
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    rises = {
        version: now[version][1] / before[version][1]
        for version in now
        if version in before and before[version][1] > 0 and not math.isnan(now[version][1])
    }
    if not rises:
        return
    text = ", ".join(f"{version} {steps.ratio_text(r)}" for version, r in rises.items())
    steps.checked(incident, f"crash rate of each version against its own baseline: {text}")
    lowest = min(rises.values())
    if limits.severity(lowest, "crash_baseline_ratio") == "info":
        return
    if new_vs_previous is not None and new_vs_previous >= limits["moved_ratio"]:
        return  # the new version rose beyond the others: the breakdown below judges it
    release_text = (
        f"; {release.new} crashes {steps.ratio_text(new_vs_previous)} as often as "
        f"{release.previous}, so the release is not the cause"
        if new_vs_previous is not None
        else ""
    )
    when = f" near {release.since:%H:%M} UTC" if release.since is not None else ""
    incident.record(
        Finding(
            severity=limits.severity(lowest, "crash_baseline_ratio"),
            title=f"Crashes rose on every app version alike ({text} their baseline){release_text}",
            subject={"platform": platform.name, "app_version": "*"},
            metric="crashes per session",
            observed=now[next(iter(rises))][1],
            baseline=before[next(iter(rises))][1],
            unit="ratio",
            cause="external",
            recommendation=(
                f"Do not halt the {platform.rollout_word}: every version crashes more. Look for "
                f"a server-side change (API responses, remote config, the model served to the "
                f"app) or an OS update that reached {platform.name} devices{when}, and read the "
                "top crash signatures shared by the versions."
            ),
        )
    )


def crash_breakdown(
    incident: Incident, release: Release, sessions: QueryResult, crashes: QueryResult, *, by: str
) -> steps.Breakdown | None:
    """3.2: the new version against the previous one per OS version or device class."""
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    if not release.compared or sessions.empty or crashes.empty:
        steps.checked(incident, f"crashes by {spoken(by)}: no two versions to compare")
        return None
    table = crash_table(
        sessions.current,
        crashes.current,
        by=by,
        new=str(release.new),
        previous=str(release.previous),
        since=since_release(incident, release),
        min_sessions=limits["min_sessions"],
        min_crashes=limits["min_crashes"],
    )
    found = steps.classify(
        table, by=by, min_change=limits["moved_ratio"], gap=limits["stands_out_gap"]
    )
    incident.markdown(_table_markdown(table, by, release))
    judged = found.table[found.table["judged"]]
    if len(judged):
        title = f"{release.new} against {release.previous}: crashes per session by {spoken(by)}"
        highlight = found.culprits[0] if found.culprits else None
        incident.show(
            charts.ranked_bars(
                judged, label=by, title=incident.chart_title(title), highlight=highlight
            )
        )
    if found.culprits:
        incident.record(_culprit(incident, release, found))
    else:
        _whole_version(incident, release, table, by)
    return found


def _table_markdown(table: pd.DataFrame, by: str, release: Release) -> str:
    lines = [
        f"| {spoken(by)} | sessions on {release.new} | crash-free {release.new} | "
        f"crash-free {release.previous} | crashes, all versions |",
        "|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        row_dict = row._asdict()
        note = "" if row_dict["judged"] else " (too few to judge)"
        lines.append(
            f"| {row_dict[by]} | {count_text(row_dict['sessions'])}{note} | "
            f"{crash_free_text(row_dict['current'])} | {crash_free_text(row_dict['baseline'])} | "
            f"{count_text(row_dict['all_crashes'])} |"
        )
    return "\n".join(lines)


def _culprit(incident: Incident, release: Release, found: steps.Breakdown) -> Finding:
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    by, values = found.by, list(found.culprits)
    worst = found.row(values[0])
    subject = {"app_version": str(release.new), by: values}
    severity = steps.as_severe_as_symptom(
        incident, limits.severity(found.change, "crash_ratio"), subject
    )
    most = found.table.sort_values("all_crashes", ascending=False).iloc[0]
    aside = ""
    if str(most[by]) not in values:
        aside = (
            f"; {spoken(by)} {most[by]} has the most crashes "
            f"({count_text(most['all_crashes'])}, all versions) at "
            f"{steps.ratio_text(most['ratio'])} the previous version's rate"
        )
    return Finding(
        severity=severity,
        title=(
            f"{release.new} crashes {steps.ratio_text(found.change)} as often as "
            f"{release.previous} on {spoken(by)} {steps.join(values)}: crash-free "
            f"{crash_free_text(worst['current'])} of {count_text(worst['sessions'])} sessions "
            f"against {crash_free_text(worst['baseline'])}; other {spoken(by)}s "
            f"{steps.ratio_text(found.others_change)}{aside}"
        ),
        subject=subject,
        metric="crashes per session",
        observed=float(worst["current"]),
        baseline=float(worst["baseline"]),
        unit="ratio",
        cause="rollout",
        recommendation=platform.halt(str(release.new), release.share)
        + f" Then read the crash reports of {release.new} on {spoken(by)} {steps.join(values)}.",
    )


def _whole_version(incident: Incident, release: Release, table: pd.DataFrame, by: str) -> None:
    """No slice stands out: the whole new version crashes more, or nothing does."""
    platform = platform_of(incident)
    limits = platform.thresholds.of(incident)
    ratio = version_ratio(table)
    named = any(
        finding.cause is not None and str(release.new) in finding.subject_values("app_version")
        for finding in incident.findings
    )
    if ratio is None or ratio < limits["moved_ratio"] or named:
        text = (
            f"no {spoken(by)} stands out for {release.new} against {release.previous} "
            f"({steps.ratio_text(ratio)} the crashes per session overall)"
        )
        steps.checked(incident, f"crashes by {spoken(by)}: {text}")
        if not named:
            incident.record(
                Finding(
                    severity="info",
                    title=f"Crashes by {spoken(by)}: {text}",
                    subject={"app_version": str(release.new), by: "*"},
                    metric="crashes per session",
                )
            )
        return
    incident.record(
        Finding(
            severity=steps.as_severe_as_symptom(
                incident,
                limits.severity(ratio, "crash_ratio"),
                {"app_version": str(release.new)},
            ),
            title=(
                f"{release.new} crashes {steps.ratio_text(ratio)} as often as {release.previous} "
                f"on every {spoken(by)} alike"
            ),
            subject={"app_version": str(release.new)},
            metric="crashes per session",
            unit="ratio",
            cause="rollout",
            recommendation=platform.halt(str(release.new), release.share),
        )
    )
