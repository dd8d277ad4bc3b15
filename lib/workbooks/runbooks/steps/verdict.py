"""The end of an investigation: a cause was named, nothing was wrong, or nothing explains it.

:func:`conclude` is the Resolution section every runbook ends with. It never promotes the
largest number to a cause: when no finding names one, a single inconclusive finding says so,
lists what the steps checked and ruled out (their trail), and recommends where to look next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from workbooks.core.findings import Finding, ranked
from workbooks.runbooks.steps.trail import trail

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident

QUIET_PREFIX = "A quiet run"
INCONCLUSIVE_TITLE = "Nothing checked here explains the alert"


def conclude(incident: Incident, *, quiet: str, next_steps: Sequence[str]) -> Finding | None:
    """Record the run's verdict when no step named a cause, then show the resolution checklist.

    * Nothing wrong at all (no warning or critical finding, no ongoing symptom): the ``quiet``
      verdict, an info finding ranked first (it is the explanation). It must start with
      "A quiet run".
    * Something wrong, no cause named: ONE inconclusive finding, warning while the symptom is
      still there (or was not checked), info once it is over, listing the trail and
      ``next_steps``.
    * A cause named: no verdict; the checklist carries the causes' recommendations.

    Returns the verdict finding recorded, if any.
    """
    if not quiet.startswith(QUIET_PREFIX):
        raise ValueError(f"a quiet verdict starts with {QUIET_PREFIX!r} (readers look for it)")
    verdict = _verdict(incident, quiet=quiet, next_steps=next_steps)
    if verdict is not None:
        incident.record(verdict)
    resolution_steps(incident, fallback=next_steps)
    return verdict


def _verdict(incident: Incident, *, quiet: str, next_steps: Sequence[str]) -> Finding | None:
    findings = incident.findings
    if any(finding.cause is not None for finding in findings):
        return None
    ongoing = trail(incident).ongoing
    wrong = [finding for finding in findings if finding.severity != "info"]
    if not wrong and not ongoing:
        return Finding(
            severity="info",
            title=quiet,
            subject={"service": incident.service},
            # "config" in the wide sense: the alert's own rule is the suspect when all is well.
            cause="config",
        )
    checks = trail(incident).checks
    detail = "Checked and ruled out: " + ("; ".join(checks) if checks else "nothing recorded")
    symptom = {
        True: "the symptom is still there",
        False: "the symptom is over",
        None: "whether it is still happening was not checked",
    }[ongoing]
    return Finding(
        severity="warning" if ongoing or ongoing is None else "info",
        title=f"{INCONCLUSIVE_TITLE} ({symptom}); see what was ruled out and where to look next",
        detail=detail + ".",
        subject={"service": incident.service},
        recommendation=" ".join(next_steps),
    )


def resolution_steps(incident: Incident, *, fallback: Sequence[str] = ()) -> None:
    """Section 4: the recommendations of what was found, causes first, as a checklist."""
    steps: list[str] = []
    for finding in ranked(incident.findings):
        if finding.recommendation and finding.severity != "info" and finding.cause is not None:
            step = f"- [ ] {finding.recommendation} *(because: {finding.title})*"
            if step not in steps:
                steps.append(step)
    for finding in ranked(incident.findings):
        if finding.recommendation and finding.severity != "info" and finding.cause is None:
            step = f"- [ ] {finding.recommendation} *(because: {finding.title})*"
            if step not in steps:
                steps.append(step)
    if not steps:
        steps += [f"- [ ] {step}" for step in fallback]
    steps.append("- [ ] Record what you did and what happened in a markdown cell below.")
    incident.markdown("\n".join(steps))
