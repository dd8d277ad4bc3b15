"""Change correlation: which version rolled out near the onset, and does the change follow it.

THE RULE (:func:`judge_rollout`). A version is named as the cause when

1. it rolled out near the onset: from ``before`` ahead of it to ``after`` behind it, and
2. the units that changed are the ones that took it: at least two thirds of the units with it
   moved, at most one third of the units without it did, and the typical change with it is
   ``gap`` times the typical change without it.

It is not named when units without it changed alike, or units with it did not change. When it
reached every unit (nothing to compare against), the timing and the change of its units decide.
Units are whatever carries a version: instances for a server's ``model_info``/``build_info``,
devices or app builds for a mobile fleet, or the versions themselves when a metric is labelled
by version (eval accuracy per ``model_version``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import analysis
from workbooks.runbooks.steps.breakdown import Breakdown, Measure
from workbooks.runbooks.steps.text import change_of, join, plural
from workbooks.runbooks.steps.trail import as_severe_as_symptom, checked

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident, QueryResult

NEAR_BEFORE = timedelta(minutes=20)
NEAR_AFTER = timedelta(minutes=10)
MOVED_WITH, MOVED_WITHOUT = 2 / 3, 1 / 3
# What a version label stands for, in a sentence: "No version changed" beside a model_version
# that did change reads as a contradiction at 3 a.m.
LABEL_NAMES = {"version": "service build", "model_version": "model version"}


@dataclass(frozen=True)
class Rollout:
    """A version that appeared in the window: when first, and on which units."""

    version: str
    at: pd.Timestamp
    units: tuple[str, ...]


def rollouts(
    versions: pd.DataFrame, *, label: str = "model_version", by: str | None = "instance"
) -> list[Rollout]:
    """Versions of ``label`` that appeared in an info-style gauge (``model_info``) in the window.

    ``by`` is the unit label (``instance``); its units are those that took the version in the
    window or run it at the end. ``by=None`` treats the fleet as one: each version is its own
    unit, for metrics labelled by the version itself.
    """
    if versions.empty:
        return []
    if by is None:
        table = analysis.changes(versions, label=label, by=[])
        firsts = table.groupby("to")["timestamp"].min()
        return [Rollout(str(v), pd.Timestamp(at), (str(v),)) for v, at in firsts.items()]
    table = analysis.changes(versions, label=label, by=by)
    running = running_versions(versions, label=label, by=by)
    found = []
    for version, group in table.groupby("to"):
        units = set(group[by].astype(str)) | {u for u, v in running.items() if v == version}
        found.append(
            Rollout(str(version), pd.Timestamp(group["timestamp"].min()), tuple(sorted(units)))
        )
    return sorted(found, key=lambda r: r.at)


def running_versions(
    versions: pd.DataFrame, *, label: str = "model_version", by: str = "instance"
) -> dict[str, str]:
    """unit -> the version it runs at the end of the window."""
    if versions.empty:
        return {}
    last = versions[versions["timestamp"] == versions["timestamp"].max()]
    return {str(u): str(v) for u, v in zip(last[by], last[label], strict=True)}


@dataclass(frozen=True)
class RolloutVerdict:
    """Whether one rollout explains the change, with the numbers that decided it."""

    rollout: Rollout
    with_units: tuple[str, ...]
    without_units: tuple[str, ...]
    with_moved: tuple[str, ...]
    without_moved: tuple[str, ...]
    with_change: float | None
    without_change: float | None
    near_onset: bool
    named: bool
    reason: str
    everywhere: bool = field(default=False)


def judge_rollout(
    rollout: Rollout,
    changes: Mapping[str, float | None],
    *,
    onset: pd.Timestamp,
    min_change: float,
    gap: float,
    before: timedelta = NEAR_BEFORE,
    after: timedelta = NEAR_AFTER,
) -> RolloutVerdict:
    """Apply THE RULE (module docstring) to one rollout. Pure.

    ``changes`` maps every unit to its change since the onset, bigger is worse (as
    :meth:`Breakdown.changes` gives); units without a number are left out of the comparison.
    """
    known = {unit: c for unit, c in changes.items() if c is not None and math.isfinite(c)}
    with_units = tuple(u for u in rollout.units if u in known)
    without = tuple(sorted(u for u in known if u not in rollout.units))
    with_moved = tuple(u for u in with_units if known[u] >= min_change)
    without_moved = tuple(u for u in without if known[u] >= min_change)
    with_change = _median([known[u] for u in with_units])
    without_change = _median([known[u] for u in without])
    near = onset - before <= rollout.at <= onset + after
    followed = bool(with_units) and len(with_moved) >= MOVED_WITH * len(with_units)
    alike = bool(without) and (
        len(without_moved) > MOVED_WITHOUT * len(without)
        or (with_change or 0.0) < gap * max(without_change or 0.0, 1e-12)
    )
    if not near:
        reason = f"it rolled out at {rollout.at:%H:%M} UTC, not near the onset ({onset:%H:%M} UTC)"
    elif not with_units:
        reason = "no unit that took it has data to compare"
    elif not followed:
        reason = f"{len(with_moved)} of {len(with_units)} units with it changed"
    elif alike:
        reason = f"{len(without_moved)} of {len(without)} units without it changed alike"
    else:
        reason = "the units that took it are the ones that changed"
    named = near and followed and not alike
    return RolloutVerdict(
        rollout,
        with_units,
        without,
        with_moved,
        without_moved,
        with_change,
        without_change,
        near,
        named,
        reason,
        everywhere=not without,
    )


def correlate_rollouts(
    incident: Incident,
    versions: QueryResult,
    changed: Breakdown | Mapping[str, float | None],
    *,
    onset: pd.Timestamp | None,
    severity: Severity | Callable[[float | None], Severity],
    label: str = "model_version",
    by: str | None = "instance",
    min_change: float = 1.5,
    gap: float = 1.4,
    measure: Measure = "ratio",
    what: str = "the change",
    unit: str | None = None,
    subject: Mapping[str, Any] | None = None,
    recommendation: str | None = None,
    before: timedelta = NEAR_BEFORE,
    after: timedelta = NEAR_AFTER,
) -> list[RolloutVerdict]:
    """Record, for each version rolled out in the window, whether the change follows it.

    ``changed`` is a :class:`Breakdown` by the unit label (or unit -> change). A named version
    gives a ``cause="rollout"`` finding whose subject carries ``{label: version, by: [units]}``
    plus ``subject``; one not named gives an info finding "rolled out ... but the change does not
    follow it". No rollout at all is an info finding too. ``onset`` defaults to the alert start.
    """
    when = onset if onset is not None else pd.Timestamp(incident.starts_at)
    changes = changed.changes() if isinstance(changed, Breakdown) else dict(changed)
    found = rollouts(versions.current, label=label, by=by) if not versions.empty else []
    if not found:
        _no_rollout(incident, versions, label=label)
        return []
    verdicts = []
    for rollout in found:
        verdict = judge_rollout(
            rollout,
            changes,
            onset=when,
            min_change=min_change,
            gap=gap,
            before=before,
            after=after,
        )
        verdicts.append(verdict)
        text = _numbers(verdict, by=by, measure=measure, unit=unit)
        if verdict.named:
            incident.record(
                _named(
                    incident,
                    verdict,
                    versions,
                    label=label,
                    by=by,
                    what=what,
                    text=text,
                    severity=severity,
                    subject=subject,
                    recommendation=recommendation,
                )
            )
        else:
            incident.record(_ruled_out(verdict, versions, label=label, by=by, what=what, text=text))
            checked(incident, f"rollout of {label} {rollout.version}: ruled out ({verdict.reason})")
    return verdicts


def _no_rollout(incident: Incident, versions: QueryResult, *, label: str) -> None:
    name = LABEL_NAMES.get(label, "version")
    incident.record(
        Finding(
            severity="info",
            title=f"No {name} ({label}) changed in the window",
            subject={"service": incident.service},
            metric=versions.name,
            recommendation="Look at other changes: config, dependencies, traffic.",
        )
    )
    checked(incident, f"rollouts: no {name} ({label}) changed in the window")


def _ruled_out(
    verdict: RolloutVerdict,
    versions: QueryResult,
    *,
    label: str,
    by: str | None,
    what: str,
    text: str,
) -> Finding:
    rollout = verdict.rollout
    return Finding(
        severity="info",
        title=f"{label} {rollout.version} rolled out at {rollout.at:%H:%M} UTC"
        f"{_share(verdict, by)}, but {what} does not follow it ({text})",
        detail=verdict.reason,
        subject={label: rollout.version},
        metric=versions.name,
    )


def _named(
    incident: Incident,
    verdict: RolloutVerdict,
    versions: QueryResult,
    *,
    label: str,
    by: str | None,
    what: str,
    text: str,
    severity: Severity | Callable[[float | None], Severity],
    subject: Mapping[str, Any] | None,
    recommendation: str | None,
) -> Finding:
    rollout = verdict.rollout
    about: dict[str, Any] = {label: rollout.version}
    if by is not None and by != label:
        about[by] = list(verdict.with_units)
    about.update(subject or {})
    if verdict.everywhere:
        title = (
            f"{label} {rollout.version} rolled out{_share(verdict, by)} at {rollout.at:%H:%M} "
            f"UTC, just before {what} ({text})"
        )
    else:
        title = (
            f"{what} follows {label} {rollout.version} ({text}); it rolled out at "
            f"{rollout.at:%H:%M} UTC{_share(verdict, by)}"
        )
    grade = severity(verdict.with_change) if callable(severity) else severity
    grade = as_severe_as_symptom(incident, grade, about)
    return Finding(
        severity=grade,
        title=title[0].upper() + title[1:],
        detail=verdict.reason,
        subject=about,
        metric=versions.name,
        recommendation=recommendation
        or f"Roll back {label} {rollout.version} (your deploy tool's undo, or pin the previous "
        "version) and watch the symptom.",
        cause="rollout",
    )


def _share(verdict: RolloutVerdict, by: str | None) -> str:
    if by is None:
        return ""
    total = len(verdict.with_units) + len(verdict.without_units)
    if verdict.everywhere:
        return f" on every {by} ({join(verdict.with_units)})"
    return (
        f" on {len(verdict.with_units)} of {total} {plural(by, total)} ({join(verdict.with_units)})"
    )


def _numbers(verdict: RolloutVerdict, *, by: str | None, measure: Measure, unit: str | None) -> str:
    mine, theirs = (f"on its {plural(by, 2)}", "on the others") if by else ("with it", "without")
    with_text = f"{change_of(verdict.with_change, measure, unit)} {mine}"
    if verdict.everywhere:
        return with_text
    return f"{with_text}, {change_of(verdict.without_change, measure, unit)} {theirs}"


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None
