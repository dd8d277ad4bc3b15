"""What an investigation checked: the trail each step leaves, read by the inconclusive verdict.

Each shared step notes what it looked at and what it concluded ("routes: none stands out, all
within 1.2x of baseline"); when nothing names a cause, :func:`workbooks.runbooks.steps.conclude`
lists the trail so a reader sees what was ruled out. The trail is kept beside the incident (in
a weak map, so it goes when the incident goes) rather than on it: the facade stays a facade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident


@dataclass
class Trail:
    """The checks made so far, and whether the symptom is still there (None: not checked)."""

    checks: list[str] = field(default_factory=list)
    ongoing: bool | None = None


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


def symptom(incident: Incident, *, ongoing: bool) -> None:
    """Note whether the alert's symptom is still there (the latest check wins)."""
    trail(incident).ongoing = ongoing
