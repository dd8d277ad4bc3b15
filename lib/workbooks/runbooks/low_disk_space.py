"""low-disk-space: Each filesystem of the host by bytes and inodes against its own history; time to full; growth, a large download, or a read-only remount; the mountpoint responsible.

Cells of ``notebooks/low-disk-space.ipynb`` call these steps in order; each records findings on the
incident. They are built on the shared investigation steps (:mod:`workbooks.runbooks.steps`:
breakdown, still happening, change correlation, the severity ladder, the verdict); replace the
placeholders with this runbook's questions, and give each step a unit test on small hand-built
frames (``tests/test_low_disk_space.py``). Thresholds are declared in :data:`THRESHOLDS`; a team
overrides them in its config under ``runbooks:``, ``low-disk-space:``, ``thresholds:``.
"""

from __future__ import annotations

from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "low-disk-space",
    # The symptom against its baseline (current / baseline): critical and warning from here.
    change_ratio_critical=2.0,
    change_ratio_warning=1.3,
    # A value of a breakdown must move this much against its own baseline to be named.
    moved_ratio=1.5,
)
SUBJECT = "low disk space"
# The top finding when nothing is wrong: readers and the e2e tests look for "A quiet run".
QUIET = (
    f"A quiet run: {SUBJECT} is back within its baseline and nothing explains the alert; "
    "its threshold may be too tight"
)


def still_happening(incident: Incident, level: QueryResult) -> steps.Recent | None:
    """Section 2: is the symptom still there, the last minutes against the baseline?"""
    return steps.still_happening(
        incident, level, severity=THRESHOLDS.of(incident).ladder("change_ratio"), what=SUBJECT
    )


def breakdown(incident: Incident, by_instance: QueryResult) -> steps.Breakdown | None:
    """Section 3.1: where is it? Each instance against its own baseline."""
    limits = THRESHOLDS.of(incident)
    return steps.breakdown(
        incident,
        by_instance,
        by="instance",
        severity=limits.ladder("change_ratio"),
        min_change=limits["moved_ratio"],
    )


def what_changed(
    incident: Incident, versions: QueryResult, where: steps.Breakdown | None
) -> list[steps.RolloutVerdict]:
    """Section 3.2: did a version roll out just before, on the instances that changed?"""
    limits = THRESHOLDS.of(incident)
    return steps.correlate_rollouts(
        incident,
        versions,
        where if where is not None else {},
        onset=None,
        severity=limits.ladder("change_ratio"),
        min_change=limits["moved_ratio"],
    )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no step named a cause, and the steps that fit the findings."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Widen the window (`lookback='12h'`) and compare with the baseline again.",
            "Check the service's dependencies and recent config changes.",
        ],
    )
