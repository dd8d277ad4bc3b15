"""Breakdown: a metric split by any label, each value against its own baseline.

A value's *change* is measured so that bigger is always worse: with ``measure="ratio"`` it is
current / baseline (``direction="up"``) or baseline / current (``"down"``); with
``measure="delta"`` it is current - baseline (``"up"``) or baseline - current (``"down"``), in the
metric's unit (accuracy: 0.05 is five points). So one rule reads every metric and direction:

* a value **moved** when its change is at least ``min_change``;
* the change is **concentrated** in the first few values (the culprits) when the last of them
  moved and stands ``gap`` times above the next one's change;
* when every value moved and none stands out, the change is **spread**: it points away from
  this label, and no value is blamed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from workbooks.core.findings import Cause, Finding, Severity
from workbooks.notebook import analysis, charts
from workbooks.runbooks.steps.ladder import Direction
from workbooks.runbooks.steps.text import change_of, change_text, fill, join, plural
from workbooks.runbooks.steps.trail import as_severe_as_symptom, checked

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident, QueryResult

Measure = Literal["ratio", "delta"]
Grade = Severity | Callable[[float | None], Severity]
_TINY = 1e-12


@dataclass(frozen=True)
class Breakdown:
    """How each value of label ``by`` moved against its own baseline, and who stands out.

    ``table`` has columns ``[by, current, baseline, ratio, delta, change, moved]``, most changed
    first. ``culprits`` are the values the change is concentrated in (empty if none);
    ``change`` is the smallest change among them, ``others_change`` the median of the rest.
    ``spread`` is True when every value moved alike.
    """

    by: str
    table: pd.DataFrame
    culprits: tuple[str, ...]
    change: float | None
    others_change: float | None
    spread: bool
    measure: Measure = "ratio"
    direction: Direction = "up"

    @property
    def moved(self) -> tuple[str, ...]:
        """Every value whose change reached ``min_change``."""
        return tuple(self.table.loc[self.table["moved"], self.by].astype(str))

    def changes(self) -> dict[str, float | None]:
        """value -> its change (None without a baseline): what :func:`correlate_rollouts` reads."""
        return {
            str(value): (None if math.isnan(change) else float(change))
            for value, change in zip(self.table[self.by], self.table["change"], strict=True)
        }

    def row(self, value: str) -> pd.Series:
        return self.table[self.table[self.by].astype(str) == str(value)].iloc[0]


def change_column(table: pd.DataFrame, *, measure: Measure, direction: Direction) -> pd.Series:
    """Each row's change, bigger is worse (see the module docstring)."""
    if measure == "ratio":
        ratio = table["ratio"].astype(float)
        return ratio if direction == "up" else 1.0 / ratio.where(ratio > 0)
    delta = table["delta"].astype(float)
    return delta if direction == "up" else -delta


def classify(
    table: pd.DataFrame,
    *,
    by: str,
    measure: Measure = "ratio",
    direction: Direction = "up",
    min_change: float = 1.5,
    gap: float = 1.4,
) -> Breakdown:
    """Culprits, spread or nothing, from a ``[by, current, baseline, ratio, delta]`` table.

    Pure: :func:`breakdown` calls it on :func:`workbooks.notebook.analysis.top_contributors`
    output; a runbook may call it on any table of that shape.
    """
    ranked = table.assign(change=change_column(table, measure=measure, direction=direction))
    ranked = ranked.sort_values("change", ascending=False, na_position="last", kind="stable")
    ranked = ranked.assign(moved=ranked["change"] >= min_change).reset_index(drop=True)
    changes = ranked["change"].dropna().to_numpy(dtype=float)
    labels = ranked.loc[ranked["change"].notna(), by].astype(str).to_list()
    for cut in range(1, len(changes)):
        top, rest = changes[cut - 1], changes[cut]
        # A value that moved the other way (a negative delta) is as far from the top as none.
        if top >= min_change and top / max(rest, _TINY) >= gap and (top > 0):
            others = float(np.median(changes[cut:]))
            return Breakdown(
                by, ranked, tuple(labels[:cut]), float(top), others, False, measure, direction
            )
    spread = len(changes) > 1 and bool((changes >= min_change).all())
    top_change = float(changes[0]) if len(changes) else None
    return Breakdown(by, ranked, (), top_change, None, spread, measure, direction)


def breakdown(
    incident: Incident,
    result: QueryResult,
    *,
    by: str,
    severity: Grade,
    since: pd.Timestamp | None = None,
    direction: Direction = "up",
    measure: Measure = "ratio",
    min_change: float = 1.5,
    gap: float = 1.4,
    what: str | None = None,
    unit: str | None = None,
    cause: Cause | None = None,
    recommendation: str | None = None,
    agg: Literal["sum", "mean", "max", "min"] | None = None,
    chart: bool = True,
    record: bool = True,
) -> Breakdown | None:
    """Split ``result`` by label ``by``; chart the ranking; record who moved (or that none did).

    Each value is compared with its own baseline over ``since`` (default: the alert start) to
    the end. With culprits, records one finding naming them (subject ``{by: [values]}``, kind
    ``cause``, severity from ``severity`` on their change) unless an earlier cause finding names
    exactly these values for ``by`` (a rollout): then it is recorded as a warning symptom.
    ``recommendation`` may hold ``{values}``, ``{it}`` and ``{its}``, filled in by :func:`fill`.
    When the change is spread, records an info finding (``{by: "*"}``); when nothing moved, a
    check on the trail only. None when the result or its baseline is empty.
    """
    if result.empty or result.baseline is None or result.baseline.empty:
        checked(incident, f"{what or result.name} by {by}: no data or no baseline to compare")
        return None
    start = since if since is not None else pd.Timestamp(incident.starts_at)
    table = analysis.top_contributors(
        result.current, result.baseline, by=by, since=start, direction=direction, agg=agg
    )
    found = classify(
        table, by=by, measure=measure, direction=direction, min_change=min_change, gap=gap
    )
    unit = unit if unit is not None else result.unit
    what = what or result.title
    if chart:
        incident.show(_ranking_chart(incident, found, what=what, unit=unit))
    if record:
        _record(
            incident,
            result,
            found,
            what=what,
            unit=unit,
            severity=severity,
            cause=cause,
            recommendation=recommendation,
        )
    return found


def _ranking_chart(
    incident: Incident, found: Breakdown, *, what: str, unit: str | None
) -> charts.Chart:
    title = incident.chart_title(f"{what} by {found.by}: change against own baseline")
    if found.measure == "ratio":
        return charts.ranked_bars(
            found.table,
            label=found.by,
            highlight=found.culprits[0] if found.culprits else None,
            title=title,
        )
    scale, shown = (100.0, "points") if unit == "ratio" else (1.0, unit)
    bars = found.table.assign(shown=found.table["delta"] * scale)
    return charts.ranked_bars(
        bars,
        label=found.by,
        value="shown",
        unit=shown,
        title=title,
        highlight=found.culprits[0] if found.culprits else None,
    )


def _record(
    incident: Incident,
    result: QueryResult,
    found: Breakdown,
    *,
    what: str,
    unit: str | None,
    severity: Grade,
    cause: Cause | None,
    recommendation: str | None,
) -> None:
    label = found.by
    if not found.culprits:
        top = found.table.iloc[0] if len(found.table) else None
        largest = (
            f"largest {change_of(found.change, found.measure, unit)} on {top[label]}"
            if top is not None
            else "no values"
        )
        if found.spread:
            incident.record(
                Finding(
                    severity="info",
                    title=f"Not one {label}: {what} moved alike across {plural(label, 2)}",
                    detail=f"every {label} moved ({largest})",
                    subject={label: "*"},
                    metric=result.name,
                )
            )
            checked(incident, f"{what} by {label}: spread across every {label} ({largest})")
        else:
            checked(incident, f"{what} by {label}: no {label} stands out ({largest})")
        return
    incident.record(
        culprit_finding(
            incident,
            result,
            found,
            what=what,
            unit=unit,
            severity=severity,
            cause=cause,
            recommendation=recommendation,
        )
    )


def culprit_finding(
    incident: Incident,
    result: QueryResult,
    found: Breakdown,
    *,
    what: str,
    unit: str | None,
    severity: Grade,
    cause: Cause | None,
    recommendation: str | None,
) -> Finding:
    """The finding that names ``found.culprits`` (what :func:`breakdown` records)."""
    label, values = found.by, found.culprits
    rows = found.table[found.table[label].astype(str).isin(values)]
    worst = rows.iloc[0]
    when = _culprit_onset(result, label, values[0], found.direction)
    explained = any(
        earlier.cause is not None and set(earlier.subject_values(label)) == set(values)
        for earlier in incident.findings
    )
    verb = "rose" if found.direction == "up" else "fell"
    many = len(values) > 1
    title = (
        f"{what} of {plural(label, len(values))} {join(values)} {verb} "
        f"{change_of(found.change, found.measure, unit)} against "
        f"{'their' if many else 'its'} baseline "
        f"({change_text(float(worst['current']), float(worst['baseline']), unit)}){when}; "
        f"other {plural(label, 2)} {change_of(found.others_change, found.measure, unit)}"
    )
    grade = severity(found.change) if callable(severity) else severity
    if not explained and cause is not None:
        grade = as_severe_as_symptom(incident, grade, {label: list(values)})
    made = Finding(
        severity=grade,
        title=title + (" (explained by the cause above)" * explained),
        subject={label: list(values)},
        metric=result.name,
        observed=float(worst["current"]),
        baseline=float(worst["baseline"]),
        unit=unit,
        recommendation=fill(recommendation, values) if recommendation else None,
        cause=None if explained else cause,
    )
    if explained and made.severity == "critical":
        made = replace(made, severity="warning")
    return made


def _culprit_onset(result: QueryResult, label: str, value: str, direction: Direction) -> str:
    try:
        series = analysis.series_of(result.current, **{label: value})
    except ValueError:  # several series per value (other labels): no single onset to show
        return ""
    onset = analysis.find_onset(series)
    return f" from {onset.at:%H:%M} UTC" if onset and onset.direction == direction else ""
