"""high-error-rate: its thresholds, and how a culprit is judged and recorded.

Shared by the steps of :mod:`workbooks.runbooks.high_error_rate`. The layers are exclusive: the
first cause named explains the errors, so a culprit a later step finds is recorded as following
from it (a warning, no cause), and a cause is as severe as the errors still failing now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import SEVERITIES, Cause, Finding, Severity
from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "high-error-rate",
    # An error share against its baseline: at least this many times is critical / a warning.
    error_ratio_critical=3.0,
    error_ratio_warning=1.5,
    # A code, route, upstream ... "moved" at this ratio of its own baseline (error shares are
    # noisy at their usual levels, so more than latency's 1.5); culprits stand this far above
    # the next one.
    moved_ratio=2.0,
    stands_out_gap=1.5,
    # Burn rates (multiples of the budget) that page / open a ticket: high_error_rate_burn.
    burn_rate_fast=14.4,
    burn_rate_slow=6.0,
)
QUIET = (
    "A quiet run: errors of every code, route, upstream and model are within their baselines "
    "now and the error budget is not burning fast. If the alert fired, it caught a burst that "
    "is over (3.1) or its threshold is too tight for this service's usual errors."
)
FOLLOWS = " (follows from the cause above)"


def since(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def grade(incident: Incident) -> Callable[[float | None], Severity]:
    """The ladder for a culprit's change, raised to the ongoing symptom's severity.

    The layers are exclusive: a culprit named here explains the errors still failing now.
    """
    ladder = THRESHOLDS.of(incident).ladder("error_ratio")
    found = steps.trail(incident)
    now = found.symptom.severity if found.ongoing and found.symptom is not None else "info"
    return lambda change: min(ladder(change), now, key=SEVERITIES.index)


def cause_named(incident: Incident) -> bool:
    return any(finding.cause is not None for finding in incident.findings)


def split(
    incident: Incident, result: QueryResult, by: str, onset: analysis.Onset | None, what: str
) -> steps.Breakdown | None:
    limits = THRESHOLDS.of(incident)
    found = steps.breakdown(
        incident,
        result,
        by=by,
        since=since(incident, onset),
        severity=grade(incident),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what=what,
        unit="ratio",
        record=False,
    )
    if found is not None and not found.culprits:
        state = "moved alike everywhere" if found.spread else "none stands out"
        largest = steps.ratio_text(found.change)
        steps.checked(incident, f"{what} by {by}: {state} (largest {largest})")
    return found


def record_culprit(
    incident: Incident,
    result: QueryResult,
    found: steps.Breakdown,
    *,
    what: str,
    cause: Cause,
    recommendation: str,
    subject: dict[str, list[str]] | None = None,
    suffix: str = "",
) -> Finding:
    """Record the culprits of ``found``: a cause, or a symptom when a cause was named above."""
    explained = cause_named(incident)
    finding = steps.culprit_finding(
        incident,
        result,
        found,
        what=what,
        unit="ratio",
        severity=grade(incident),
        cause=None if explained else cause,
        recommendation=None if explained else recommendation,
    )
    if subject or suffix:
        finding = replace(
            finding, subject={**finding.subject, **(subject or {})}, title=finding.title + suffix
        )
    if explained:
        title = finding.title if "above)" in finding.title else finding.title + FOLLOWS
        # A consequence is worth seeing, never ranked with the cause.
        severity = max(finding.severity, "warning", key=SEVERITIES.index)
        finding = replace(finding, title=title, severity=severity)
    incident.record(finding)
    steps.checked(incident, f"{what} by {found.by}: {steps.join(found.culprits)} stand out")
    return finding
