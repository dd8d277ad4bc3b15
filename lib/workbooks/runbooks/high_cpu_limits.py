"""high-cpu: its thresholds, and how it picks the instances or hosts that stand out.

Shared by :mod:`workbooks.runbooks.high_cpu` and :mod:`workbooks.runbooks.high_cpu_host`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import Severity
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "high-cpu",
    # The service's CPU (or CPU per request) against its baseline: critical / warning.
    cpu_ratio_critical=2.0,
    cpu_ratio_warning=1.3,
    # An instance "moved" at this ratio AND this many cores more (an idle process that doubles
    # is noise); culprits stand this far above the next one.
    moved_ratio=1.4,
    moved_cores=0.2,
    stands_out_gap=1.3,
    # Load: requests this much above baseline, with CPU per request within this ratio of its own.
    traffic_ratio_warning=1.3,
    per_request_flat=1.2,
    # Share of CFS periods throttled, rise against the baseline (0.15 = 15 points).
    throttled_change_critical=0.4,
    throttled_change_warning=0.15,
    # Cores a host spends on anything but the service, rise against the baseline.
    neighbour_cores_critical=1.5,
    neighbour_cores_warning=0.5,
    # A host this busy (share of its cores) with others using at least `others_share` of what
    # is busy is busy with something else, even when it was as busy in the baseline.
    node_busy_critical=0.9,
    node_busy_warning=0.75,
    others_share=0.5,
)


def capped(grade: Callable[[float | None], Severity]) -> Callable[[float | None], Severity]:
    """A ladder that stops at warning: for the symptom, so the cause found ranks above it."""

    def graded(value: float | None) -> Severity:
        severity = grade(value)
        return "warning" if severity == "critical" else severity

    return graded


def standouts(
    table: pd.DataFrame,
    *,
    min_change: float,
    gap: float,
    min_delta: float = 0.0,
    measure: steps.Measure = "ratio",
) -> steps.Breakdown:
    """:func:`steps.classify`, plus two rules of this runbook.

    A culprit must also have moved by ``min_delta`` in the metric's unit; and a lone value (a
    host alert sees one node, often one instance) is a culprit when it moved at all, since
    there is nothing to stand out from.
    """
    found = steps.classify(table, by="instance", measure=measure, min_change=min_change, gap=gap)
    moved = found.table[found.table["moved"] & (found.table["delta"] >= min_delta)]
    if len(found.table) == 1 and len(moved) == 1:
        value = str(moved["instance"].iloc[0])
        return replace(found, culprits=(value,), change=float(moved["change"].iloc[0]))
    culprits = tuple(c for c in found.culprits if c in set(moved["instance"].astype(str)))
    if culprits == found.culprits:
        return found
    return replace(found, culprits=culprits, change=found.change if culprits else None)
