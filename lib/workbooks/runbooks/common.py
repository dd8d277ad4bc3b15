"""Judgements shared by the runbooks: how big a change is, and whether it is concentrated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from workbooks.core.findings import Severity, format_value, ranked

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident

# A value is "concentrated" in a few label values when their change against their own baseline
# stands this far above the next one's.
CONCENTRATION_GAP = 1.4


def severity_for_ratio(
    ratio: float | None, *, critical: float = 2.0, warning: float = 1.3
) -> Severity:
    if ratio is None or not math.isfinite(ratio):
        return "info"
    if ratio >= critical:
        return "critical"
    if ratio >= warning:
        return "warning"
    return "info"


@dataclass(frozen=True)
class Concentration:
    """The label values a change is concentrated in, and how the rest fared."""

    values: tuple[str, ...]
    ratio: float  # the smallest ratio among the culprits
    others_ratio: float  # the median ratio of the rest


def concentrated(
    table: pd.DataFrame, *, by: str, min_ratio: float = 1.5, direction: str = "up"
) -> Concentration | None:
    """Whether a few values of ``by`` explain the change (a clear gap in ratio to the rest).

    ``table`` is :func:`workbooks.notebook.analysis.top_contributors` output. All values changing
    alike
    is not a concentration: it points away from this label.
    """
    ranked = table.dropna(subset=["ratio"])
    if len(ranked) < 2:
        return None
    ratios = ranked["ratio"].to_numpy(dtype=float)
    labels = ranked[by].astype(str).to_list()
    if direction == "down":  # a drop: smaller ratios are worse; compare inverses
        ratios = 1.0 / ratios.clip(min=1e-9)
    for cut in range(1, len(ratios)):
        top, rest = ratios[cut - 1], ratios[cut]
        if top >= min_ratio and top / max(rest, 1e-9) >= CONCENTRATION_GAP:
            others = float(pd.Series(ratios[cut:]).median())
            return Concentration(tuple(labels[:cut]), float(top), others)
    return None


def join(values: Sequence[str]) -> str:
    return ", ".join(values)


def change_text(current: float | None, baseline: float | None, unit: str | None) -> str:
    """'0.9 s → 3.8 s' style, tolerant of missing numbers."""
    if current is None or baseline is None:
        return "no baseline to compare"
    return f"{format_value(baseline, unit)} → {format_value(current, unit)}"


def ratio_text(ratio: float | None) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "n/a"
    return f"{ratio:.1f}x"


def resolution_steps(incident: Incident, *, quiet: str, fallback: str) -> None:
    """Section 4: the recommendations of what was found, causes first, as a checklist.

    When nothing was found at all, say so plainly: a quiet run is a good run.
    """
    from workbooks.core.findings import Finding

    steps: list[str] = []
    for finding in ranked(incident.findings):
        if finding.recommendation and finding.severity != "info":
            step = f"- [ ] {finding.recommendation} *(because: {finding.title})*"
            if step not in steps:
                steps.append(step)
    if not any(finding.severity != "info" for finding in incident.findings):
        incident.record(
            # Ranked first: when nothing is wrong, that is the explanation.
            Finding(
                severity="info",
                title=quiet,
                subject={"service": incident.service},
                likely_cause=True,
            )
        )
    if not steps:
        steps.append(f"- [ ] {fallback}")
    steps.append("- [ ] Record what you did and what happened in a markdown cell below.")
    incident.markdown("\n".join(steps))
