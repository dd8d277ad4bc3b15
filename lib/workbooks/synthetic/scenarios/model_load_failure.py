"""model-load-failure: a version that fails to load everywhere it goes, OOM at load on the
instances with a smaller memory limit, or a slow model store that times loads out.

Each instance loads its model at start, again every few minutes (the server re-checks the
registry) and whenever a version rolls out or its pod restarts. The loads are simulated event by
event (`_simulate`), so counters, readiness, the loaded version and memory all tell one story. A
failed load is retried with a growing back-off, as a crash-looping pod or a server's retry loop
would. An OOM at load kills the model worker (the server process survives and counts it), so the
instance has no model until a load succeeds.

api-0 and api-1 are the small instances (a lower memory limit when a cause gives them one); api-3
is the big one, which has the most failures in the OOM case (retried timeouts that recovered).
"""

from __future__ import annotations

import math

import numpy as np

from workbooks.synthetic.scenarios import model_load_failure_sim as sim
from workbooks.synthetic.scenarios.families import BUILD_INFO
from workbooks.synthetic.scenarios.fleet import (
    GIB,
    INSTANCES,
    MODEL,
    NEW_VERSION,
    Fleet,
)
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "model-load-failure"

ALERT = AlertRule(
    alertname="ModelLoadFailure",
    severity="critical",
    expr='sum by (service) (increase(model_load_total{result="failure"}[15m])'
    " and on (service) model_ready$S) > 0",
    summary="Model loads failing on {service}",
    description="At least one model load of {service} failed in the last 15 minutes.",
)

# What a version needs: its weights resident, and half again while loading (deserialising).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def _loads_total(fleet: Fleet) -> list[Group]:
    groups = []
    times = fleet.grid.times
    for instance in INSTANCES:
        loads, _ = sim.history(fleet, instance)
        kinds = sorted({(load.version, load.reason) for load in loads})
        for version, reason in kinds:
            moments = [
                load.at for load in loads if (load.version, load.reason) == (version, reason)
            ]
            labels = fleet.labels(
                instance=instance,
                model=MODEL,
                model_version=version,
                result="failure" if reason else "success",
                reason=reason,
            )
            values = ints(sim.count_until(times, moments))
            groups.append(
                fleet.group({f"model_load_total{{{labels}}}": values}, _from(fleet, moments))
            )
    return groups


def _from(fleet: Fleet, moments: list[float]) -> np.ndarray:
    """A series exists from the sample before its first event (at 0 there, as a client library
    creates a labelled counter on first use and Prometheus needs the 0 to see the first rise)."""
    first = int(np.searchsorted(fleet.grid.times, min(moments), side="left")) - 1
    return np.arange(fleet.grid.times.size) >= max(first, 0)


def _durations(fleet: Fleet) -> list[Group]:
    times = fleet.grid.times
    every = [load for instance in INSTANCES for load in sim.history(fleet, instance)[0]]
    groups = []
    for version in sorted({load.version for load in every}):
        loads = [load for load in every if load.version == version]
        series = {}
        for le in (*DURATION_BUCKETS, math.inf):
            moments = [load.at + load.seconds for load in loads if load.seconds <= le]
            bound = "+Inf" if math.isinf(le) else repr(le)
            labels = fleet.labels(model=MODEL, model_version=version, le=bound)
            series[f"model_load_duration_seconds_bucket{{{labels}}}"] = ints(
                sim.count_until(times, moments)
            )
        labels = fleet.labels(model=MODEL, model_version=version)
        done = np.array([load.at + load.seconds for load in loads])
        series[f"model_load_duration_seconds_count{{{labels}}}"] = ints(
            sim.count_until(times, list(done))
        )
        spent = np.array([load.seconds for load in loads])
        order = np.argsort(done)
        total = np.concatenate([[0.0], np.cumsum(spent[order])])
        series[f"model_load_duration_seconds_sum{{{labels}}}"] = fixed(
            total[np.searchsorted(done[order], times, side="right")], 3
        )
        groups.append(fleet.group(series, _from(fleet, list(done))))
    return groups


def _ready(fleet: Fleet) -> list[Group]:
    return [
        fleet.single(
            "model_ready",
            ints((sim.loaded(fleet, instance) != "").astype(float)),
            instance=instance,
            model=MODEL,
        )
        for instance in INSTANCES
    ]


def _model_info(fleet: Fleet) -> list[Group]:
    groups = []
    ones = ["1"] * fleet.grid.times.size
    for instance in INSTANCES:
        loaded = sim.loaded(fleet, instance)
        for version in sorted(set(loaded) - {""}):
            mask = loaded == version
            groups.append(
                fleet.single(
                    "model_info", ones, mask, instance=instance, model=MODEL, model_version=version
                )
            )
    return groups


def _memory(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        loaded = sim.loaded(fleet, instance)
        model = np.array([sim.MODEL_GIB.get(version, 0.0) for version in loaded])
        rss = (sim.BASE_RSS_GIB + model) * GIB * fleet.grid.noise(0.003, "memory", instance)
        groups.append(fleet.single("process_resident_memory_bytes", ints(rss), instance=instance))
    return groups


def _memory_limit(fleet: Fleet) -> list[Group]:
    plan = sim.plan_of(fleet)
    groups = []
    for instance in INSTANCES:
        limit = np.array([sim.limit_gib(plan, instance, t) for t in fleet.grid.times]) * GIB
        groups.append(
            fleet.single("container_spec_memory_limit_bytes", ints(limit), instance=instance)
        )
    return groups


FAMILIES = (
    BUILD_INFO,
    Family("model_load", "counter", "Model loads by version, result and reason.", _loads_total),
    Family("model_load_duration_seconds", "histogram", "Model load duration.", _durations),
    Family("model_ready", "gauge", "1 while the model is loaded and serving.", _ready),
    Family("model_info", "gauge", "1 while this model version is loaded.", _model_info),
    Family("process_resident_memory_bytes", "gauge", "Resident memory.", _memory),
    Family("container_spec_memory_limit_bytes", "gauge", "Container memory limit.", _memory_limit),
)


def _minutes(fleet: Fleet, minutes: float) -> float:
    return fleet.grid.onset + 60.0 * minutes


def _bad_version(fleet: Fleet) -> None:
    # The registry moves to a version whose artifact does not load; each instance that takes it
    # (staggered a minute apart) unloads its model and retries the new one.
    s = fleet.scenario
    version, pods = s.affected["model_version"], s.affected["instance"].split(",")
    sim.plan_of(fleet).broken[version] = s.affected["reason"]
    for number, pod in enumerate(pods):
        fleet.roll_out([pod], version, minutes_from_onset=0.5 + number, restart=True)


def _small_limit(fleet: Fleet) -> None:
    # The small instances restart with a lower memory limit (a resources change, a smaller node
    # pool): the version's load peak no longer fits. The big instance had retried timeouts
    # earlier, which recovered.
    s = fleet.scenario
    plan = sim.plan_of(fleet)
    for pod in s.affected["instance"].split(","):
        plan.limits[pod] = (_minutes(fleet, 0.5), s.magnitude)
    noisy = s.affected["noisy"]
    plan.glitches.append((noisy, _minutes(fleet, -50.0), _minutes(fleet, -8.0), "timeout"))
    plan.retry_seconds[noisy] = 20.0


def _small_limit_then_rollout(fleet: Fleet) -> None:
    # OOM on the small instances from the onset; a new version rolls out everywhere 6 minutes
    # later and loads fine on the big ones (it does not fit the small ones either).
    s = fleet.scenario
    plan = sim.plan_of(fleet)
    for pod in s.affected["instance"].split(","):
        plan.limits[pod] = (_minutes(fleet, 0.5), s.magnitude)
    fleet.roll_out(INSTANCES, s.affected["model_version"], minutes_from_onset=6.0, restart=True)


def _slow_store(fleet: Fleet) -> None:
    # A canary runs the new version on api-3 since long before; then the store slows down for
    # every version, reaching `magnitude` times its load time 20 minutes after the onset.
    s = fleet.scenario
    fleet.roll_out(["api-3"], s.affected["model_version"], minutes_from_onset=-75.0)
    sim.plan_of(fleet).slow_store = (_minutes(fleet, 0.0), s.magnitude)


def _glitch(fleet: Fleet) -> None:
    # One failed load (the registry briefly answered 404), retried and loaded.
    s = fleet.scenario
    start = _minutes(fleet, 0.5)
    sim.plan_of(fleet).glitches.append((s.affected["instance"], start, start + 600.0, "not_found"))
    sim.plan_of(fleet).retry_seconds[s.affected["instance"]] = 600.0


CAUSES = (
    Cause(
        name="bad_version",
        summary="a version fails to load on every instance that takes it (reason)",
        affected={
            "model_version": NEW_VERSION,
            "reason": "checksum_mismatch",
            "instance": ",".join(INSTANCES),
        },
        magnitude=1.0,
        plant=_bad_version,
    ),
    Cause(
        name="small_limit",
        summary="OOM at load on the instances whose memory limit was lowered (to GiB)",
        affected={"instance": "api-0,api-1", "noisy": "api-3"},
        magnitude=12.0,
        plant=_small_limit,
    ),
    Cause(
        name="small_limit_rollout",
        summary="OOM on the small instances, and a new version that loads fine elsewhere",
        affected={"instance": "api-0,api-1", "model_version": NEW_VERSION},
        magnitude=12.0,
        plant=_small_limit_then_rollout,
    ),
    Cause(
        name="slow_store",
        summary="the model store slows down for every version (load time multiplier)",
        affected={"model_version": NEW_VERSION},
        magnitude=20.0,
        plant=_slow_store,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=0.0, plant=lambda _: None),
    Cause(
        name="glitch",
        summary="one transient failed load, retried",
        affected={"instance": "api-2"},
        magnitude=1.0,
        plant=_glitch,
    ),
)

LABELS = {
    "reason": ("checksum_mismatch", "incompatible_runtime", "not_found", "oom", "timeout"),
    "noisy": INSTANCES,
}

DEMO = Case(
    id="demo",
    cause="bad_version",
    seed=10,
    expect={"model_version": NEW_VERSION, "reason": "checksum_mismatch"},
)

CASES = (
    Case(
        id="load-bad-version",
        cause="bad_version",
        seed=31,
        expect={"model_version": NEW_VERSION, "reason": "checksum_mismatch"},
    ),
    Case(
        id="load-runtime-canary",
        cause="bad_version",
        seed=32,
        affected={"reason": "incompatible_runtime", "instance": "api-2,api-3"},
        expect={"model_version": NEW_VERSION, "reason": "incompatible_runtime"},
    ),
    Case(
        id="load-oom-small",
        cause="small_limit",
        seed=33,
        expect={"instance": ("api-0", "api-1"), "reason": "oom"},
        not_named={"instance": "api-3"},
    ),
    Case(
        id="load-oom-rollout",
        cause="small_limit_rollout",
        seed=34,
        expect={"instance": ("api-0", "api-1"), "reason": "oom"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(
        id="load-slow-store",
        cause="slow_store",
        seed=35,
        expect={"reason": "timeout"},
    ),
    Case(
        id="load-oom-one",
        cause="small_limit",
        seed=37,
        magnitude=13.0,
        affected={"instance": "api-1", "noisy": "api-2"},
        expect={"instance": "api-1", "reason": "oom"},
        not_named={"instance": "api-2"},
    ),
    Case(
        id="load-slow-store-mild",
        cause="slow_store",
        seed=38,
        magnitude=16.0,
        expect={"reason": "timeout"},
    ),
    Case(id="load-quiet", cause="glitch", seed=36, expect={}),
)
