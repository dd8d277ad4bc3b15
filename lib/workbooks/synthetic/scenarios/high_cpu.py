"""high-cpu: load, a version that costs more per request, a runaway instance, throttling at a
lowered quota, and a busy neighbour on one instance's host.

Each instance `api-k` runs on its own 4-core node `<service>-node-k` (node_exporter's
`instance`); the service's process metrics carry `node` (the Kubernetes relabelling of the
pod's node name), which is how the workbook finds the hosts. api-3 always burns the most CPU,
so a workbook must judge each instance against its own baseline, not by size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO, MODEL_INFO, REQUESTS
from workbooks.synthetic.scenarios.fleet import (
    INSTANCES,
    NEW_BUILD,
    NEW_VERSION,
    ROUTES,
    Fleet,
)
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, fixed
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "high-cpu"

ALERT = AlertRule(
    alertname="HighCpuUsage",
    severity="warning",
    expr="max by (service) (rate(process_cpu_seconds_total$S[5m]) / on (service, instance) "
    "(container_spec_cpu_quota$S / container_spec_cpu_period$S)) > 0.8",
    summary="High CPU on {service}",
    description="An instance of {service} or its host has used over 80% of its CPU for 5 minutes.",
)

# Cores each instance uses at the daily mean traffic (api-3 serves the heaviest tenants).
BASE_CORES = {"api-0": 1.0, "api-1": 1.1, "api-2": 0.9, "api-3": 2.0}
# CPU limits: api-3, the busiest, was given more.
QUOTA_CORES = {"api-0": 4.0, "api-1": 4.0, "api-2": 4.0, "api-3": 6.0}
NODE_CORES = 4
NODE_SYSTEM_CORES = 0.25  # the node's own daemons (kubelet, node_exporter, logging)
CFS_PERIODS_PER_SECOND = 10.0  # the default 100 ms CFS period
MODES = {"user": 0.7, "system": 0.25, "iowait": 0.03, "steal": 0.02}


def node_of(fleet: Fleet, instance: str) -> str:
    """The node (node_exporter `instance`) `instance` runs on, unique per scenario's service."""
    return f"{fleet.service}-node-{INSTANCES.index(instance)}"


def _load(fleet: Fleet, instance: str) -> np.ndarray:
    """How the instance's requests compare with normal (1.0): the mean factor over its routes."""
    return np.mean([fleet.factor(("requests", instance, route)) for route in ROUTES], axis=0)


def _demand(fleet: Fleet, instance: str) -> np.ndarray:
    cores = BASE_CORES[instance] * fleet.grid.traffic * fleet.grid.noise(0.03, "cpu", instance)
    return cores * _load(fleet, instance) * fleet.factor(("cpu", instance))


def _quota(fleet: Fleet, instance: str) -> np.ndarray:
    return QUOTA_CORES[instance] + fleet.offset(("quota", instance))


def _used(fleet: Fleet, instance: str) -> np.ndarray:
    """CPU the process gets: its demand, capped by the quota (CFS throttles the rest)."""
    return np.minimum(_demand(fleet, instance), 0.98 * _quota(fleet, instance))


def _process_cpu(fleet: Fleet) -> list[Group]:
    return [
        fleet.single(
            "process_cpu_seconds_total",
            fixed(fleet.counter(_used(fleet, i), i), 3),
            instance=i,
            node=node_of(fleet, i),
        )
        for i in INSTANCES
    ]


def _throttled_share(fleet: Fleet, instance: str) -> np.ndarray:
    """Throttled periods rise as demand nears the quota; most are throttled beyond it."""
    ratio = _demand(fleet, instance) / _quota(fleet, instance)
    share = np.clip(0.02 + 1.5 * np.maximum(ratio - 0.85, 0.0), 0.0, 0.95)
    return share * fleet.grid.noise(0.1, "throttle", instance)


def _container_metric(name: str, values: Callable[[Fleet, str], list[str]]) -> Family:
    def series(fleet: Fleet) -> list[Group]:
        return [fleet.single(name, values(fleet, i), instance=i) for i in INSTANCES]

    counter = name.endswith("_total")
    return Family(
        name.removesuffix("_total"), "counter" if counter else "gauge", f"cAdvisor {name}.", series
    )


def _periods(fleet: Fleet, instance: str) -> np.ndarray:
    return np.full(fleet.grid.times.size, CFS_PERIODS_PER_SECOND)


CONTAINER = (
    _container_metric(
        "container_cpu_usage_seconds_total",
        lambda f, i: fixed(f.counter(1.03 * _used(f, i), i), 3),
    ),
    _container_metric(
        "container_cpu_cfs_periods_total", lambda f, i: fixed(f.counter(_periods(f, i), i), 0)
    ),
    _container_metric(
        "container_cpu_cfs_throttled_periods_total",
        lambda f, i: fixed(f.counter(_periods(f, i) * _throttled_share(f, i), i), 0),
    ),
    _container_metric("container_spec_cpu_quota", lambda f, i: fixed(_quota(f, i) * 1e5, 0)),
    _container_metric("container_spec_cpu_period", lambda f, i: ["100000"] * f.grid.times.size),
)


def _node_busy(fleet: Fleet, instance: str) -> np.ndarray:
    busy = _used(fleet, instance) + NODE_SYSTEM_CORES + fleet.offset(("neighbour", instance))
    return np.minimum(busy, NODE_CORES - 0.05)


def _node_cpu(fleet: Fleet) -> list[Group]:
    groups = []
    for i in INSTANCES:
        node = escape(node_of(fleet, i))
        busy = _node_busy(fleet, i)
        booted = fleet.grid.first - 7 * 86400
        per_mode = {mode: busy * share for mode, share in MODES.items()}
        per_mode["idle"] = NODE_CORES - busy
        series = {}
        for cpu in range(NODE_CORES):
            for mode, cores in per_mode.items():
                seconds = fleet.grid.counter(cores / NODE_CORES, booted)
                key = f'node_cpu_seconds_total{{instance="{node}",cpu="{cpu}",mode="{mode}"}}'
                series[key] = fixed(seconds, 2)
        groups.append(fleet.group(series))
    return groups


def _node_load(name: str, noise: float) -> Family:
    def series(fleet: Fleet) -> list[Group]:
        groups = []
        for i in INSTANCES:
            load = _node_busy(fleet, i) * fleet.grid.noise(noise, name, i)
            key = f'{name}{{instance="{escape(node_of(fleet, i))}"}}'
            groups.append(fleet.group({key: fixed(load, 2)}))
        return groups

    return Family(name, "gauge", f"{name[-1]}m load average.", series)


PROCESS_CPU = Family(
    "process_cpu_seconds", "counter", "CPU time used by the process.", _process_cpu
)
NODE_CPU = Family("node_cpu_seconds", "counter", "Seconds the CPUs spent in each mode.", _node_cpu)
FAMILIES = (
    REQUESTS,
    MODEL_INFO,
    BUILD_INFO,
    PROCESS_CPU,
    *CONTAINER,
    NODE_CPU,
    _node_load("node_load1", 0.08),
    _node_load("node_load5", 0.03),
)


def _ramp(fleet: Fleet, to: float, minutes: float = 20.0) -> np.ndarray:
    """1 until onset, then a straight line up to `to` over `minutes`, then flat."""
    progress = np.clip(fleet.grid.hours_after * 60 / minutes, 0.0, 1.0)
    return 1 + (to - 1) * progress


def _instances(fleet: Fleet) -> list[str]:
    return fleet.scenario.affected["instance"].split(",")


def _load_rise(fleet: Fleet) -> None:
    # More requests on every instance; each costs what it did, so CPU follows the load.
    for instance in INSTANCES:
        for route in ROUTES:
            fleet.scale(("requests", instance, route), _ramp(fleet, fleet.scenario.magnitude))


def _costly_model(fleet: Fleet) -> None:
    fleet.roll_out(_instances(fleet), fleet.scenario.affected["model_version"], restart=True)
    for instance in _instances(fleet):
        fleet.scale(("cpu", instance), fleet.after_onset(fleet.scenario.magnitude))


def _costly_build(fleet: Fleet) -> None:
    fleet.deploy(_instances(fleet), fleet.scenario.affected["version"])
    for instance in _instances(fleet):
        fleet.scale(("cpu", instance), fleet.after_onset(fleet.scenario.magnitude))


def _runaway(fleet: Fleet) -> None:
    # A thread spinning on one instance: its CPU climbs, its requests do not.
    for instance in _instances(fleet):
        fleet.scale(("cpu", instance), _ramp(fleet, fleet.scenario.magnitude, minutes=10))


def _runaway_after_rollout(fleet: Fleet) -> None:
    # A model rolls out elsewhere 10 minutes earlier and costs nothing more: not the cause.
    rolled = fleet.scenario.affected["rolled_out"].split(",")
    fleet.roll_out(rolled, fleet.scenario.affected["model_version"], minutes_from_onset=-10)
    _runaway(fleet)


def _quota_cut(fleet: Fleet) -> None:
    # The CPU limit lowered to `magnitude` cores (a config change): demand is now above it.
    for instance in _instances(fleet):
        cut = QUOTA_CORES[instance] - fleet.scenario.magnitude
        fleet.shift(("quota", instance), fleet.after_onset(-cut, before=0.0))


def _neighbour(fleet: Fleet) -> None:
    # Another workload on the node of `instance` takes `magnitude` cores; the service's own
    # CPU does not change.
    for instance in _instances(fleet):
        fleet.shift(("neighbour", instance), fleet.after_onset(fleet.scenario.magnitude, 0.0))


CAUSES = (
    Cause(
        name="load",
        summary="requests rise on every instance (ramp, times magnitude); CPU per request flat",
        affected={},
        magnitude=1.8,
        plant=_load_rise,
    ),
    Cause(
        name="costly_model",
        summary="a model version costs `magnitude` times the CPU per request where it rolled out",
        affected={"instance": "api-0,api-1", "model_version": NEW_VERSION},
        magnitude=2.0,
        plant=_costly_model,
    ),
    Cause(
        name="costly_build",
        summary="a build of the service costs `magnitude` times the CPU where it was deployed",
        affected={"instance": "api-2", "version": NEW_BUILD},
        magnitude=1.7,
        plant=_costly_build,
    ),
    Cause(
        name="runaway",
        summary="one instance's CPU climbs to `magnitude` times (a spinning thread)",
        affected={"instance": "api-1"},
        magnitude=1.8,
        plant=_runaway,
    ),
    Cause(
        name="runaway_after_rollout",
        summary="one instance runs away 10 minutes after a harmless model rollout elsewhere",
        affected={"instance": "api-3", "model_version": NEW_VERSION, "rolled_out": "api-0,api-1"},
        magnitude=1.8,
        plant=_runaway_after_rollout,
    ),
    Cause(
        name="quota_cut",
        summary="the instance's CPU limit is cut to `magnitude` cores: throttled at its quota",
        affected={"instance": "api-2"},
        magnitude=1.0,
        plant=_quota_cut,
    ),
    Cause(
        name="neighbour",
        summary="another workload takes `magnitude` cores on the instance's node",
        affected={"instance": "api-2"},
        magnitude=2.5,
        plant=_neighbour,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=0.0, plant=lambda _: None),
)

LABELS = {"rolled_out": INSTANCES}

DEMO = Case(
    id="demo",
    cause="costly_model",
    seed=9,
    expect={"model_version": NEW_VERSION, "instance": ("api-0", "api-1")},
)

CASES = (
    Case(id="cpu-load", cause="load", seed=31, expect={"service": "svc-cpu-load"}),
    Case(
        id="cpu-model",
        cause="costly_model",
        seed=32,
        expect={"model_version": NEW_VERSION, "instance": ("api-0", "api-1")},
    ),
    Case(id="cpu-build", cause="costly_build", seed=33, expect={"version": NEW_BUILD}),
    # api-1 at 1.6x (about 1.8 cores) stays below api-3's normal 2 cores.
    Case(id="cpu-runaway", cause="runaway", seed=34, magnitude=1.6, expect={"instance": "api-1"}),
    Case(
        id="cpu-runaway-rollout",
        cause="runaway_after_rollout",
        seed=35,
        magnitude=2.0,
        expect={"instance": "api-3"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(id="cpu-throttled", cause="quota_cut", seed=36, expect={"instance": "api-2"}),
    Case(
        id="cpu-neighbour",
        cause="neighbour",
        seed=37,
        affected={"instance": "api-1"},
        magnitude=2.0,
        expect={"instance": "svc-cpu-neighbour-node-1"},
    ),
    Case(id="cpu-quiet", cause="none", seed=38, expect={}),
)
