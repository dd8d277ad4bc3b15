"""mobile-export-failure: which target and version fail to export, since when, and why.

Cells of ``notebooks/mobile-export-failure.ipynb`` call these steps in order; each records
findings. Section 3.1 (:func:`results`) finds the targets whose failures rose against their
own baseline (a target that routinely times out has not moved); the cause steps
(:mod:`workbooks.runbooks.mobile_export_failure_causes`, re-exported here) then tell apart a
new op one target cannot convert, a size budget, a toolchain upgrade and parity drift.
Thresholds are in :data:`THRESHOLDS`; a team overrides them under
``runbooks: {mobile-export-failure: {thresholds: ...}}``.
"""

from __future__ import annotations

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.mobile_export_failure_causes import (
    parity,
    size_budget,
    toolchains,
    unsupported_ops,
)
from workbooks.runbooks.mobile_export_failure_data import (
    THRESHOLDS,
    Failing,
    levels,
    scope,
    since_of,
)

__all__ = [
    "THRESHOLDS",
    "Failing",
    "parity",
    "resolution",
    "results",
    "scope",
    "size_budget",
    "still_happening",
    "toolchains",
    "unsupported_ops",
    "what_changed",
]

RECENT_POINTS = 10
QUIET = (
    "A quiet run: every target's share of failed exports is within its baseline, no op became "
    "unsupported, every artifact fits its budget, parity is within tolerance and no toolchain "
    "changed. The alert's threshold may be too tight for this pipeline's routine failures."
)


def still_happening(incident: Incident, by_target: QueryResult) -> steps.Recent | None:
    """Section 2: the failure share of each target over the last minutes, against its baseline."""
    return steps.still_happening(
        incident,
        by_target,
        by="target",
        measure="delta",
        severity=THRESHOLDS.of(incident).ladder("failure_rise"),
        what="share of failed exports",
        unit="ratio",
    )


def what_changed(
    incident: Incident, by_target: QueryResult, by_version: QueryResult, toolchains: QueryResult
) -> None:
    """Section 2: one target or all, and what changed in the window (a model version released,
    a toolchain upgraded), in one info finding; section 3 judges whether it matters."""
    limits = THRESHOLDS.of(incident)
    table = levels(by_target, ["target"], since=since_of(incident, None))
    table["rise"] = table["current"] - table["baseline"].fillna(0.0)
    moved = sorted(table.loc[table["rise"] >= limits["failure_rise_warning"], "target"])
    every = sorted(table["target"])
    scope = (
        f"{len(moved)} of {len(every)} targets {'fails' if len(moved) == 1 else 'fail'} more "
        f"than usual ({steps.join(moved)})"
        if moved
        else f"none of the {len(every)} targets fails more than usual"
    )
    changes = [
        f"model version {version} (first exported {first:%H:%M} UTC)"
        for version, first in _releases(incident, by_version)
    ]
    if not toolchains.empty:
        found = analysis.changes(toolchains.current, label="toolchain_version", by="target")
        changes += [
            f"toolchain {row['from']} → {row['to']} on {row['target']} "
            f"({row['timestamp']:%H:%M} UTC)"
            for _, row in found.iterrows()
        ]
    changed = (
        f"changed in the window: {steps.join(changes)}"
        if changes
        else "no model version released and no toolchain changed in the window"
    )
    steps.checked(incident, f"{scope}; {changed}")
    incident.record(
        Finding(
            severity="info",
            title=f"{scope[0].upper()}{scope[1:]}; {changed} (section 3 says whether it matters)",
            subject={"target": moved or every},
            metric=by_target.name,
        )
    )


def _releases(incident: Incident, by_version: QueryResult) -> list[tuple[str, pd.Timestamp]]:
    """Versions exported in the window and not a day earlier, with their first export."""
    if by_version.empty:
        return []
    table = levels(by_version, ["model_version"], since=pd.Timestamp(incident.window.start))
    new = table[table["baseline"].isna()]
    return [(str(row.model_version), row.first) for row in new.itertuples()]


def results(incident: Incident, by_version: QueryResult, by_reason: QueryResult) -> Failing | None:
    """Section 3.1: failures per target and version over time; which target and reason rose.

    Each (target, reason) is compared with its own baseline, in points of the target's runs,
    so executorch's routine timeouts (half its runs) are not blamed for being many.
    """
    onset = _onset(by_reason)
    since = since_of(incident, onset)
    if not by_version.empty:
        incident.show(
            charts.timeseries(
                by_version.current,
                baseline=by_version.baseline,
                by=["target", "model_version"],
                title=incident.chart_title("Share of export runs failing, by target and version"),
                unit="ratio",
                alert_start=pd.Timestamp(incident.starts_at),
                onset=onset,
                subtitle="dashed: the same time a day earlier",
            )
        )
    if by_reason.empty:
        return None
    table = levels(by_reason, ["target", "reason"], since=since)
    table["rise"] = table["current"] - table["baseline"].fillna(0.0)
    failing = Failing(
        since=since,
        onset=onset,
        rises=table.groupby("target")["rise"].sum().to_dict(),
        new_versions=_new_versions(incident, by_version),
    )
    _record_reasons(incident, table, since=since)
    return failing


def _onset(by_reason: QueryResult) -> pd.Timestamp | None:
    """When failures began: the onset of the (target, reason) that rose most, if one did."""
    if by_reason.empty:
        return None
    wide = analysis.to_wide(by_reason.current, ["target", "reason"])
    before = analysis.to_wide(by_reason.baseline, ["target", "reason"])
    # The last minutes against the same minutes a day earlier: the window is mostly before the
    # onset, so its median would hide a failure that began near the end.
    recent = slice(-RECENT_POINTS, None)
    usual = before.iloc[recent].median().reindex(wide.columns).fillna(0.0)
    rises = (wide.iloc[recent].median() - usual).dropna()
    if rises.empty:
        return None
    series = wide[rises.idxmax()].dropna()
    found = analysis.find_onset(series)
    if found is None or found.direction != "up":
        return None
    # increase()[15m] smears a step over 15 minutes and the step fit lands mid-ramp: walk back
    # to the first sample that had already left the level before.
    left = series[series.index <= found.at]
    risen = left > found.before + 0.1 * (found.after - found.before)
    start = found.at
    for moment, above in zip(reversed(left.index), reversed(risen.to_numpy()), strict=True):
        if not above:
            break
        start = moment
    return start


def _record_reasons(incident: Incident, table: pd.DataFrame, *, since: pd.Timestamp) -> None:
    limits = THRESHOLDS.of(incident)
    grade = limits.ladder("failure_rise")
    table = table.sort_values("rise", ascending=False, kind="stable")
    rose = table[table["rise"] >= limits["failure_rise_warning"]]
    steady = table[(table["rise"] < limits["failure_rise_warning"]) & (table["current"] >= 0.05)]
    for row in steady.itertuples():
        steps.checked(
            incident,
            f"{row.target} {row.reason}: {format_value(row.current, 'ratio')} of runs, as at "
            f"baseline ({format_value(row.baseline, 'ratio')})",
        )
    if rose.empty:
        steps.checked(incident, "failures by target and reason: none rose over its baseline")
        incident.record(
            Finding(
                severity="info",
                title="No target's failures rose over their baseline: " + _steady_text(steady),
                subject={"target": sorted(set(table["target"]))},
                metric="mobile_export_failure_share_by_reason",
            )
        )
        return
    for row in rose.itertuples():
        numbers = steps.change_text(row.current, row.baseline, "ratio")
        steps.checked(incident, f"{row.target} {row.reason}: rose {numbers}")
        incident.record(
            Finding(
                severity=grade(row.rise),
                title=f"Exports to {row.target} fail with {row.reason}: "
                f"{steps.points_text(row.rise)} of its runs since {since:%H:%M} UTC ({numbers})"
                + (f"; {_steady_text(steady)}" if len(steady) else ""),
                subject={"target": row.target, "reason": row.reason},
                metric="mobile_export_failure_share_by_reason",
                observed=float(row.current),
                baseline=float(row.baseline) if pd.notna(row.baseline) else None,
                unit="ratio",
            )
        )


def _steady_text(steady: pd.DataFrame) -> str:
    if steady.empty:
        return "every target exports as usual"
    parts = [
        f"{row.target}'s {row.reason} ({format_value(row.current, 'ratio')} of runs)"
        for row in steady.itertuples()
    ]
    return f"{steps.join(parts)} {'is' if len(parts) == 1 else 'are'} as usual"


def _new_versions(incident: Incident, by_version: QueryResult) -> tuple[str, ...]:
    """Versions exported in the window and not a day earlier, noted with their first export."""
    found = _releases(incident, by_version)
    for version, first in found:
        steps.checked(incident, f"new model version {version}: first export {first:%H:%M} UTC")
    return tuple(version for version, _ in found)


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Open the failed runs' CI logs for the target and reason that rose (section 3.1).",
            "Widen the window (`lookback='6h'`) and compare with a week ago (`baseline='7d'`).",
            "Check the export runners themselves (disk, memory, network to the artifact store).",
        ],
    )
