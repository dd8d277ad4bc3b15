"""anomalous-traffic, section 3.1: the traffic against last week and each day between.

Traffic is weekly: a peak that the same weekday last week had too, while the days between did
not, is the weekly pattern and not an incident. The days between are read with an ``offset``
query per day (:func:`days_between`), so any Prometheus with a week of history answers them.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps


def _since(incident: Incident) -> pd.Timestamp:
    return pd.Timestamp(incident.starts_at)


def days_between(incident: Incident, name: str) -> dict[int, QueryResult]:
    """Query ``name`` once per whole day between the baseline and now (``days_ago=1d`` ...).

    Empty when the baseline is not a whole number of days, or only one day.
    """
    days = incident.baseline_offset / timedelta(days=1)
    if days != int(days):
        return {}
    return {
        day: incident.query(name, baseline=False, days_ago=f"{day}d") for day in range(1, int(days))
    }


def against_last_week(
    incident: Incident, rate: QueryResult, days: dict[int, QueryResult], *, limits: steps.Limits
) -> float | None:
    """Total requests against the same window last week and each day between; the ratio."""
    if rate.empty:
        return None
    between = [
        r.current.assign(when=f"{day}d earlier") for day, r in sorted(days.items()) if not r.empty
    ]
    frames = [rate.current.assign(when="now"), *between]
    baseline = rate.baseline.assign(when="now") if rate.baseline is not None else None
    incident.show(
        charts.timeseries(
            pd.concat(frames, ignore_index=True),
            baseline=baseline,
            by="when",
            title=incident.chart_title("Requests against last week (dashed) and the days between"),
            unit="per_second",
            alert_start=_since(incident),
            baseline_label="same window last week",
        )
    )
    week = rate.compare(since=_since(incident))
    ratios = [
        analysis.compare(rate.series()[0], analysis.series_of(r.current), since=_since(incident))
        for r in days.values()
        if not r.empty
    ]
    day_ratios = [c.ratio for c in ratios if c.ratio is not None]
    incident.record(_week_finding(incident, rate, week, day_ratios, limits))
    return week.ratio


def _week_finding(
    incident: Incident,
    rate: QueryResult,
    week: analysis.Comparison,
    day_ratios: list[float],
    limits: steps.Limits,
) -> Finding:
    ratio = week.ratio
    change = None if not ratio else max(ratio, 1.0 / ratio)
    severity = limits.severity(change, "traffic_change")
    numbers = steps.change_text(week.current, week.baseline, "req/s")
    title = f"Traffic is {steps.ratio_text(ratio)} the same window last week ({numbers})"
    if day_ratios:
        low, high = min(day_ratios), max(day_ratios)
        span = steps.ratio_text(low) if low == high else f"{low:.2f}x–{high:.2f}x"
        title += f", and {span} the {len(day_ratios)} days between"
        pattern = limits["weekly_pattern_ratio"]
        day_changes = sorted(max(r, 1.0 / r) for r in day_ratios if r > 0)
        unlike_days = bool(day_changes) and day_changes[len(day_changes) // 2] >= pattern
        like_last_week = change is not None and change < pattern
        title += (
            ": "
            + {
                (True, True): "a weekly pattern, as on the same weekday last week",
                (True, False): "as usual",
                (False, True): "unlike last week and unlike the days between",
                (
                    False,
                    False,
                ): "unlike last week but like the days between (was last week unusual?)",
            }[like_last_week, unlike_days]
        )
    # Whether it is still going on is section 2's to say (steps.still_happening).
    steps.checked(incident, f"traffic against last week: {steps.ratio_text(ratio)} ({numbers})")
    return Finding(
        severity=severity,
        title=title,
        subject={"service": incident.service},
        metric=rate.name,
        observed=week.current,
        baseline=week.baseline,
        unit="req/s",
    )
