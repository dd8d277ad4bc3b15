"""What an investigation checked: the trail each step leaves, read by the inconclusive verdict.

Each shared step notes what it looked at and what it concluded ("routes: none stands out, all
within 1.2x of baseline"); when nothing names a cause, :func:`workbooks.runbooks.steps.conclude`
lists the trail so a reader sees what was ruled out. The trail is kept beside the incident (in
a weak map, so it goes when the incident goes) rather than on it: the facade stays a facade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from workbooks.core.findings import SEVERITIES, Finding, Severity

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident


@dataclass
class Trail:
    """The checks made so far, and whether the symptom is still there (None: not checked).

    ``symptom`` is the "still happening?" finding, when one was recorded.
    """

    checks: list[str] = field(default_factory=list)
    ongoing: bool | None = None
    symptom: Finding | None = None


_TRAILS: WeakKeyDictionary[Incident, Trail] = WeakKeyDictionary()


def trail(incident: Incident) -> Trail:
    """This incident's trail (created empty on first use)."""
    found = _TRAILS.get(incident)
    if found is None:
        found = _TRAILS[incident] = Trail()
    return found


def checked(incident: Incident, text: str) -> None:
    """Note one check and its outcome, in a line a reader understands on its own."""
    notes = trail(incident).checks
    if text not in notes:
        notes.append(text)


def symptom(incident: Incident, *, ongoing: bool, finding: Finding | None = None) -> None:
    """Note whether the alert's symptom is still there (the latest check wins), and its finding."""
    found = trail(incident)
    found.ongoing = ongoing
    found.symptom = finding


def as_severe_as_symptom(
    incident: Incident, severity: Severity, subject: Mapping[str, Any]
) -> Severity:
    """A cause is at least as severe as the ongoing symptom it explains.

    The symptom is the "still happening?" finding; a cause explains it when its ``subject``
    names every label value of the symptom's subject (the route or eval set that is still bad).
    Without this, a cause graded on its own number (4.9 points) would rank below the symptom it
    explains (5.4 points over the last 10 minutes) across a threshold.
    """
    found = trail(incident)
    if not found.ongoing or found.symptom is None:
        return severity
    probe = Finding(severity="info", title="", subject=dict(subject))
    covered = all(
        set(found.symptom.subject_values(label)) <= set(probe.subject_values(label))
        for label in found.symptom.subject
    )
    if not covered:
        return severity
    return min(severity, found.symptom.severity, key=SEVERITIES.index)
