"""high-memory: a leak on one instance, a step on the pods that loaded a new version, or a leak
while an unrelated rollout restarts other pods.

api-3 is always the largest process, so a workbook must look at growth, not size.
"""

from __future__ import annotations

from workbooks.synthetic.scenarios.families import CPU, MODEL_INFO, START_TIME
from workbooks.synthetic.scenarios.fleet import GIB, INSTANCES, NEW_VERSION, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "high-memory"

ALERT = AlertRule(
    alertname="HighMemoryUsage",
    severity="warning",
    expr="max by (service) (predict_linear(process_resident_memory_bytes$S[30m], 4 * 3600)"
    " / container_spec_memory_limit_bytes$S) > 1",
    summary="High memory usage on {service}",
    description="At its current growth, memory of an instance of {service} reaches its limit within 4h.",  # noqa: E501
)

RSS_GIB = {"api-0": 5.0, "api-1": 5.8, "api-2": 6.6, "api-3": 9.5}
MEMORY_LIMIT_BYTES = 16 * GIB


def _memory(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        rss = RSS_GIB[instance] * GIB * (1 + 0.03 * (fleet.grid.traffic - 1))
        rss *= fleet.grid.noise(0.004, "memory", instance)
        rss += fleet.offset(("memory", instance))
        groups.append(fleet.single("process_resident_memory_bytes", ints(rss), instance=instance))
    return groups


def _memory_limit(fleet: Fleet) -> list[Group]:
    limit = [str(MEMORY_LIMIT_BYTES)] * fleet.grid.times.size
    return [fleet.single("container_spec_memory_limit_bytes", limit, instance=i) for i in INSTANCES]


MEMORY = Family(
    "process_resident_memory_bytes", "gauge", "Resident memory of the process.", _memory
)
MEMORY_LIMIT = Family(
    "container_spec_memory_limit_bytes", "gauge", "Container memory limit.", _memory_limit
)
FAMILIES = (MODEL_INFO, CPU, MEMORY, MEMORY_LIMIT, START_TIME)


def _leak(fleet: Fleet) -> None:
    s = fleet.scenario
    fleet.shift(("memory", s.affected["instance"]), s.magnitude * GIB * fleet.grid.hours_after)


def _step(fleet: Fleet) -> None:
    # The pods restart with the new model, which needs `magnitude` GiB more from then on.
    s = fleet.scenario
    pods = s.affected["instance"].split(",")
    fleet.roll_out(pods, s.affected["model_version"], restart=True)
    for pod in pods:
        fleet.shift(("memory", pod), s.magnitude * GIB * fleet.grid.after)


def _leak_during_rollout(fleet: Fleet) -> None:
    s = fleet.scenario
    # Other pods restart with a new version ten minutes before the leak begins; their memory
    # does not change.
    rolled = s.affected["rolled_out"].split(",")
    fleet.roll_out(rolled, s.affected["model_version"], minutes_from_onset=-10, restart=True)
    _leak(fleet)


CAUSES = (
    Cause(
        name="leak",
        summary="one instance's memory grows steadily from onset (GiB per hour)",
        affected={"instance": "api-1"},
        magnitude=3.0,
        plant=_leak,
    ),
    Cause(
        name="step",
        summary="the pods that restart with a new version need more memory (GiB)",
        affected={"instance": "api-0,api-1", "model_version": NEW_VERSION},
        magnitude=3.0,
        plant=_step,
    ),
    Cause(
        name="leak_during_rollout",
        summary="one instance leaks while a new version restarts other pods",
        affected={"instance": "api-2", "model_version": NEW_VERSION, "rolled_out": "api-0,api-1"},
        magnitude=3.0,
        plant=_leak_during_rollout,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=0.0, plant=lambda _: None),
)

LABELS = {"rolled_out": INSTANCES}

DEMO = Case(id="demo", cause="leak", seed=8, expect={"instance": "api-1"})

CASES = (
    Case(id="mem-leak-1", cause="leak", seed=21, magnitude=3.0, expect={"instance": "api-1"}),
    Case(
        id="mem-leak-0",
        cause="leak",
        seed=22,
        magnitude=2.0,
        affected={"instance": "api-0"},
        expect={"instance": "api-0"},
    ),
    Case(
        id="mem-step",
        cause="step",
        seed=23,
        magnitude=2.5,
        affected={"instance": "api-0,api-1"},
        expect={"model_version": NEW_VERSION, "instance": ("api-0", "api-1")},
    ),
    Case(
        id="mem-leak-rollout",
        cause="leak_during_rollout",
        seed=25,
        magnitude=2.5,
        expect={"instance": "api-2"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(id="mem-quiet", cause="none", seed=24, expect={}),
)
