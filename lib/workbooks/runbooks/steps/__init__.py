"""Shared investigation steps: what every runbook module is written with.

A runbook cell fetches its queries through the :class:`~workbooks.notebook.incident.Incident`
and calls its runbook module; the module calls these steps, and each step records findings on
the incident and notes what it checked on the incident's trail.

* :class:`Thresholds` / :class:`Limits` / :func:`severity_for`: the severity ladder. A runbook
  declares its thresholds; a team overrides them in its config under
  ``runbooks: {<id>: {thresholds: {name: value}}}``.
* :func:`still_happening`: the symptom over the last minutes against its baseline.
* :func:`breakdown` (pure core: :func:`classify`): a metric split by any label, each value
  against its own baseline; names the values that stand out, or says the change is spread.
* :func:`correlate_rollouts` (pure core: :func:`judge_rollout`, :func:`rollouts`): whether the
  change follows a version that rolled out near the onset.
* :func:`conclude`: the verdict when no step named a cause (quiet, or inconclusive with what was
  ruled out), and the resolution checklist.
* :func:`checked` / :func:`symptom`: for a runbook's own steps to leave the same trail;
  :func:`as_severe_as_symptom`: a cause is at least as severe as the ongoing symptom it explains.
"""

from workbooks.runbooks.steps.breakdown import (
    Breakdown,
    Measure,
    breakdown,
    change_column,
    classify,
    culprit_finding,
)
from workbooks.runbooks.steps.ladder import Direction, Limits, Thresholds, severity_for
from workbooks.runbooks.steps.recent import Recent, still_happening
from workbooks.runbooks.steps.rollout import (
    Rollout,
    RolloutVerdict,
    correlate_rollouts,
    judge_rollout,
    rollouts,
    running_versions,
)
from workbooks.runbooks.steps.text import (
    change_of,
    change_text,
    fill,
    join,
    plural,
    points_text,
    ratio_text,
)
from workbooks.runbooks.steps.trail import Trail, as_severe_as_symptom, checked, symptom, trail
from workbooks.runbooks.steps.verdict import QUIET_PREFIX, conclude, resolution_steps

__all__ = [
    "QUIET_PREFIX",
    "Breakdown",
    "Direction",
    "Limits",
    "Measure",
    "Recent",
    "Rollout",
    "RolloutVerdict",
    "Thresholds",
    "Trail",
    "as_severe_as_symptom",
    "breakdown",
    "change_column",
    "change_of",
    "change_text",
    "checked",
    "classify",
    "conclude",
    "correlate_rollouts",
    "culprit_finding",
    "fill",
    "join",
    "judge_rollout",
    "plural",
    "points_text",
    "ratio_text",
    "resolution_steps",
    "rollouts",
    "running_versions",
    "severity_for",
    "still_happening",
    "symptom",
    "trail",
]
