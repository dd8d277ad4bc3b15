"""Is it still happening? The symptom over the last minutes against its baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import analysis
from workbooks.runbooks.steps.breakdown import Grade, Measure, change_column, classify
from workbooks.runbooks.steps.ladder import Direction
from workbooks.runbooks.steps.text import change_of, change_text
from workbooks.runbooks.steps.trail import checked, symptom

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident, QueryResult

RECENT = timedelta(minutes=10)


@dataclass(frozen=True)
class Recent:
    """The symptom over the last minutes: the worst value and whether it is still bad."""

    ongoing: bool
    severity: Severity
    subject: dict[str, str]
    change: float | None
    current: float | None
    baseline: float | None


def still_happening(
    incident: Incident,
    result: QueryResult,
    *,
    severity: Grade,
    by: str | None = None,
    recent: timedelta = RECENT,
    direction: Direction = "up",
    measure: Measure = "ratio",
    what: str | None = None,
    unit: str | None = None,
) -> Recent | None:
    """Is it still happening? ``result`` over the last ``recent`` against its baseline.

    With ``by``, the worst value of that label (each against its own baseline). Records one
    finding, "Still happening: ..." or "Not happening now: ...", notes on the trail whether the
    symptom is ongoing, and returns it; None without data.
    """
    if result.empty:
        return None
    unit = unit if unit is not None else result.unit
    what = what or result.title
    worst = _worst_recent(
        incident, result, by=by, recent=recent, measure=measure, direction=direction, what=what
    )
    if worst is None:
        return None
    subject, name, change, current, base = worst
    grade = severity(change) if callable(severity) else severity
    minutes = f"{recent.total_seconds() / 60:.0f} min"
    numbers = change_text(current, base, unit)
    if grade == "info":
        every = f"every {by}'s " if by else ""
        title = (
            f"Not happening now: over the last {minutes} {every}{what} is within its baseline "
            f"(worst {name}, {change_of(change, measure, unit)}: {numbers})"
        )
    else:
        title = (
            f"Still happening: {name} is {_against(change, measure, direction, unit)} "
            f"over the last {minutes} ({numbers})"
        )
    finding = Finding(
        severity=grade,
        title=title,
        subject=subject,
        metric=result.name,
        observed=current,
        baseline=base,
        unit=unit,
    )
    incident.record(finding)
    symptom(incident, ongoing=grade != "info", finding=finding)
    checked(incident, f"still happening: {'yes' if grade != 'info' else 'no'} ({name}, {numbers})")
    return Recent(grade != "info", grade, subject, change, current, base)


def _worst_recent(
    incident: Incident,
    result: QueryResult,
    *,
    by: str | None,
    recent: timedelta,
    measure: Measure,
    direction: Direction,
    what: str,
) -> tuple[dict[str, str], str, float, float, float] | None:
    """(subject, name, change, current, baseline) of the worst value over the last ``recent``."""
    if by is None:
        compared = result.compare(tail=pd.Timedelta(recent))
        frame = pd.DataFrame([{"ratio": compared.ratio or math.nan, "delta": compared.delta}])
        change = float(change_column(frame, measure=measure, direction=direction).iloc[0])
        return {"service": incident.service}, what, change, compared.current, compared.baseline
    since = pd.Timestamp(incident.window.end) - pd.Timedelta(recent)
    table = analysis.top_contributors(result.current, result.baseline, by=by, since=since)
    found = classify(table, by=by, measure=measure, direction=direction)
    if found.table.empty or math.isnan(found.table["change"].iloc[0]):
        return None
    row = found.table.iloc[0]
    return (
        {by: str(row[by])},
        f"{what} of {row[by]}",
        float(row["change"]),
        float(row["current"]),
        float(row["baseline"]),
    )


def _against(change: float, measure: Measure, direction: Direction, unit: str | None) -> str:
    if measure == "ratio":
        ratio = change if direction == "up" else 1.0 / change if change else math.nan
        return f"{change_of(ratio, 'ratio', unit)} its baseline"
    side = "above" if direction == "up" else "below"
    return f"{change_of(change, 'delta', unit)} {side} its baseline"
