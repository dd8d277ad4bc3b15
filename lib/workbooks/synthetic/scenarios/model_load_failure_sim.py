"""model-load-failure scenarios, the simulation: every load of every instance, event by event.

A cause sets a `Plan` on the fleet (a broken version, a lowered memory limit, a slow store,
glitches); `history` plays each instance's loads from it: at start, every few minutes (the
server re-checks the registry), at once after a rollout or a restart, and with a growing
back-off after a failure. The families of ``model_load_failure.py`` read counters, readiness,
the loaded version and memory from the same history, so they tell one story.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple
from weakref import WeakKeyDictionary

import numpy as np

from workbooks.synthetic.scenarios.fleet import NEW_VERSION, OLD_VERSION, Fleet

MODEL_GIB = {OLD_VERSION: 9.6, NEW_VERSION: 10.2}
LOAD_PEAK = 1.5
BASE_RSS_GIB = 1.4  # the server without a model
LIMIT_GIB = {"api-0": 24.0, "api-1": 24.0, "api-2": 24.0, "api-3": 32.0}
LOAD_SECONDS = {OLD_VERSION: 8.0, NEW_VERSION: 9.0}  # median from the store, healthy
TIMEOUT_SECONDS = 120.0
RELOAD_SECONDS = 300.0  # the registry re-check
RETRY_SECONDS, MAX_BACKOFF_SECONDS = 10.0, 300.0
# A failure of these leaves the instance with no model (the worker was killed or restarted).
UNLOADS = {"oom", "checksum_mismatch", "incompatible_runtime", "not_found"}


class Load(NamedTuple):
    at: float  # Unix seconds
    version: str
    reason: str  # "" on success
    seconds: float


@dataclass
class Plan:
    """What a cause changed about loading; the families read the simulation of it."""

    broken: dict[str, str] = field(default_factory=dict)  # version -> failure reason
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)  # instance -> (at, GiB)
    slow_store: tuple[float, float] | None = None  # (from, factor reached 20 min later)
    glitches: list[tuple[str, float, float, str]] = field(default_factory=list)
    retry_seconds: dict[str, float] = field(default_factory=dict)  # instance -> fixed retry


_PLANS: WeakKeyDictionary[Fleet, Plan] = WeakKeyDictionary()
_LOADS: WeakKeyDictionary[Fleet, dict[str, tuple[list[Load], list[tuple[float, str]]]]] = (
    WeakKeyDictionary()
)


def plan_of(fleet: Fleet) -> Plan:
    return _PLANS.setdefault(fleet, Plan())


def limit_gib(plan: Plan, instance: str, at: float) -> float:
    changed = plan.limits.get(instance)
    return changed[1] if changed is not None and at >= changed[0] else LIMIT_GIB[instance]


def _target(fleet: Fleet, instance: str, at: float) -> str:
    rollout = fleet.rollouts.get(instance)
    return rollout.version if rollout is not None and at >= rollout.at else OLD_VERSION


def _outcome(fleet: Fleet, instance: str, version: str, at: float, rng) -> Load:
    plan = plan_of(fleet)
    seconds = LOAD_SECONDS[version] * math.exp(rng.normal(0.0, 0.2))
    if plan.slow_store is not None and at >= plan.slow_store[0]:
        ramp = min((at - plan.slow_store[0]) / 1200.0, 1.0)
        seconds *= 1 + (plan.slow_store[1] - 1) * ramp
    if version in plan.broken:
        return Load(at, version, plan.broken[version], 0.4 * seconds)
    if LOAD_PEAK * MODEL_GIB[version] > limit_gib(plan, instance, at):
        return Load(at, version, "oom", 0.7 * seconds)
    for who, start, end, reason in plan.glitches:
        if who == instance and start <= at < end:
            spent = TIMEOUT_SECONDS if reason == "timeout" else 0.3 * seconds
            return Load(at, version, reason, spent)
    if seconds > TIMEOUT_SECONDS:
        return Load(at, version, "timeout", TIMEOUT_SECONDS)
    return Load(at, version, "", seconds)


def _triggers(fleet: Fleet, instance: str) -> list[float]:
    """Moments that make an instance load at once: a rollout, a pod restarted with a new limit."""
    plan = plan_of(fleet)
    moments = [change.at for change in (fleet.rollouts.get(instance),) if change is not None]
    if instance in plan.limits:
        moments.append(plan.limits[instance][0])
    return sorted(moments)


def _simulate(fleet: Fleet, instance: str) -> tuple[list[Load], list[tuple[float, str]]]:
    """Every load of `instance`, and its loaded version over time ("" for none)."""
    rng = fleet.grid.rng("loads", instance)
    end = float(fleet.grid.times[-1])
    at = float(fleet.grid.times[0]) - RELOAD_SECONDS * rng.random()
    loads: list[Load] = []
    states: list[tuple[float, str]] = [(at - 1.0, OLD_VERSION)]
    triggers = _triggers(fleet, instance)
    failures = 0
    while at <= end:
        version = _target(fleet, instance, at)
        load = _outcome(fleet, instance, version, at, rng)
        loads.append(load)
        done = at + load.seconds
        if not load.reason:
            failures = 0
            states.append((done, version))
            following = done + RELOAD_SECONDS * rng.uniform(0.8, 1.2)
        else:
            failures += 1
            if load.reason in UNLOADS:
                states.append((at, ""))
            fixed_retry = plan_of(fleet).retry_seconds.get(instance)
            backoff = fixed_retry or min(RETRY_SECONDS * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
            following = done + backoff
        soon = [moment for moment in triggers if at < moment < following]
        if soon:
            # A rollout or a restart unloads the model and loads at once.
            states.append((soon[0], ""))
            following = soon[0]
        at = following
    return loads, states


def history(fleet: Fleet, instance: str) -> tuple[list[Load], list[tuple[float, str]]]:
    cached = _LOADS.setdefault(fleet, {})
    if instance not in cached:
        cached[instance] = _simulate(fleet, instance)
    return cached[instance]


def loaded(fleet: Fleet, instance: str) -> np.ndarray:
    """The version loaded at each sample ("" for none)."""
    _, states = history(fleet, instance)
    moments = np.array([moment for moment, _ in states])
    names = np.array([version for _, version in states], dtype=object)
    index = np.searchsorted(moments, fleet.grid.times, side="right") - 1
    return names[np.clip(index, 0, None)]


def count_until(times: np.ndarray, moments: list[float]) -> np.ndarray:
    return np.searchsorted(np.sort(np.array(moments, dtype=float)), times, side="right")
