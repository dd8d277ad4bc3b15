"""high-error-rate: synthetic incidents for the High error rate runbook.

Rendered by `workbook new`; fill in every TODO. What goes here (see the sibling modules, e.g.
high_memory.py): the alert, the metric families the workbook reads (METRICS.md), the causes it
must tell apart (each an effect on the shared fleet), the demo, and the cases
`workbook test high-error-rate` runs. At least three causes with different culprits, one where the
culprit is not the largest absolute value, one with a change that is not the cause, a quiet
control.
"""

from __future__ import annotations

from workbooks.synthetic.scenarios.families import MODEL_INFO
from workbooks.synthetic.scenarios.fleet import INSTANCES, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "high-error-rate"

ALERT = AlertRule(
    alertname="HighErrorRate",
    severity="warning",  # TODO: critical, warning or info
    expr="TODO: the rule's PromQL; $S stands for the service selector",
    summary="High error rate on {service}",
    description="TODO: what fired on {service}, in one sentence.",
)

# TODO: the metric the workbook reads, with its normal level per instance; rename it.
METRIC = "high_error_rate_todo"
NORMAL = {instance: 100.0 + 10.0 * number for number, instance in enumerate(INSTANCES)}


def _signal(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        value = NORMAL[instance] * fleet.grid.traffic * fleet.grid.noise(0.02, METRIC, instance)
        value = value * fleet.factor(("high_error_rate", instance))
        groups.append(fleet.single(METRIC, fixed(value, 3), instance=instance))
    return groups


SIGNAL = Family(METRIC, "gauge", "TODO: what the metric measures.", _signal)
FAMILIES = (SIGNAL, MODEL_INFO)  # only what the workbook reads


def _one_instance(fleet: Fleet) -> None:
    # TODO: each cause changes the fleet; here one instance's metric rises at onset.
    s = fleet.scenario
    fleet.scale(("high_error_rate", s.affected["instance"]), fleet.after_onset(s.magnitude))


CAUSES = (
    Cause(
        name="one_instance",
        summary="TODO: one instance's metric rises at onset",
        affected={"instance": "api-1"},
        magnitude=3.0,
        plant=_one_instance,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=1.0, plant=lambda _: None),
)

DEMO = None  # TODO: Case(id="demo", cause=..., seed=..., expect=...) once the notebook exists

CASES = (
    Case(id="high-error-rate-one", cause="one_instance", seed=1, expect={"instance": "api-1"}),
    Case(id="high-error-rate-quiet", cause="none", seed=2, expect={}),
)
