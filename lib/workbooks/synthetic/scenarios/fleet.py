"""The fleet every scenario runs on, and the state a planted cause changes.

One `service`, instances `api-0`..`api-3`, four routes with different normal latencies, model
`mm-llm` at 2.3.1 everywhere until a cause rolls out another version. A cause (in its runbook's
module) plants itself by calling `Fleet` methods: roll a version out, scale or shift a keyed
series after some moment. Metric families read those keys back; a key nobody set means "as
normal", so shared code never asks which cause is planted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from workbooks.synthetic.scenarios.grid import Grid
from workbooks.synthetic.scenarios.openmetrics import Group, escape

if TYPE_CHECKING:
    from workbooks.synthetic.scenarios.scenario import Scenario

MODEL = "mm-llm"
OLD_VERSION = "2.3.1"
NEW_VERSION = "2.4.0"
# The service's own build (build_info{version}), deployed apart from the model.
OLD_BUILD = "1.8.2"
NEW_BUILD = "1.9.0"
INSTANCES = ("api-0", "api-1", "api-2", "api-3")
GIB = 1024**3


class RouteProfile(NamedTuple):
    requests_per_second: float  # per instance, at the daily mean
    median_seconds: float  # of the lognormal latency
    sigma: float  # of log(latency)


# Tuned for what histogram_quantile(0.99, ...) reports over the latency buckets (linear
# interpolation inside a bucket overstates tail latency): chat ~0.5 s, vision ~0.24 s (~0.9 s at
# 4x), audio ~1.5 s, embed ~0.08 s.
ROUTES: dict[str, RouteProfile] = {
    "/v1/chat": RouteProfile(12.0, 0.15, 0.50),
    "/v1/vision": RouteProfile(4.0, 0.06, 0.45),
    "/v1/audio": RouteProfile(2.0, 0.45, 0.37),
    "/v1/embed": RouteProfile(20.0, 0.02, 0.45),
}
ERROR_RATIOS = {"500": 0.004, "503": 0.001}
CPU_CORES = 1.2  # per instance at the daily mean

Key = tuple[str, ...]


class Rollout(NamedTuple):
    version: str
    at: float  # Unix seconds
    restart: bool  # the process started anew with the version (counters reset)


class Fleet:
    """One scenario's fleet over its sample grid: who runs what, and what a cause changed."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.service = scenario.service
        self.grid = Grid(scenario)
        self.started = {
            i: math.floor(self.grid.first - 86400 * (1 + 3 * self.grid.rng("start", i).random()))
            for i in INSTANCES
        }
        self.rollouts: dict[str, Rollout] = {}
        self.deploys: dict[str, Rollout] = {}
        self._scale: dict[Key, np.ndarray] = {}
        self._shift: dict[Key, np.ndarray] = {}
        self._requests: dict[tuple[str, str], np.ndarray] = {}

    # --- what causes call ---------------------------------------------------------------------

    def roll_out(
        self,
        instances: Iterable[str],
        version: str = NEW_VERSION,
        *,
        minutes_from_onset: float = 0.0,
        restart: bool = False,
    ) -> None:
        """`version` replaces 2.3.1 on `instances`, at onset plus `minutes_from_onset`."""
        at = self.grid.onset + 60 * minutes_from_onset
        for instance in instances:
            self.rollouts[instance] = Rollout(version, at, restart)

    def deploy(
        self,
        instances: Iterable[str],
        version: str = NEW_BUILD,
        *,
        minutes_from_onset: float = 0.0,
        restart: bool = True,
    ) -> None:
        """The service's build `version` replaces 1.8.2 on `instances` (a deploy restarts them)."""
        at = self.grid.onset + 60 * minutes_from_onset
        for instance in instances:
            self.deploys[instance] = Rollout(version, at, restart)

    def scale(self, key: Key, factor: np.ndarray | float) -> None:
        """Multiply the series under `key` (e.g. ("latency", instance, route)) by `factor`."""
        self._scale[key] = self.factor(key) * factor

    def shift(self, key: Key, amount: np.ndarray | float) -> None:
        """Add `amount` to the series under `key` (e.g. ("memory", instance))."""
        self._shift[key] = self.offset(key) + amount

    def after_onset(self, value: float, before: float = 1.0) -> np.ndarray:
        """`before` until onset, `value` from onset on: a step change."""
        return np.where(self.grid.after, value, before)

    # --- what families read -------------------------------------------------------------------

    def factor(self, key: Key) -> np.ndarray:
        return self._scale.get(key, np.ones(self.grid.times.size))

    def offset(self, key: Key) -> np.ndarray:
        return self._shift.get(key, np.zeros(self.grid.times.size))

    def versions(self) -> list[str]:
        """Every version served at some point: 2.3.1 first, then those rolled out."""
        rolled = sorted({rollout.version for rollout in self.rollouts.values()})
        return [OLD_VERSION, *[version for version in rolled if version != OLD_VERSION]]

    def version_mask(self, instance: str, version: str) -> np.ndarray:
        """When `instance` serves `version`."""
        rollout = self.rollouts.get(instance)
        if rollout is None:
            return np.full(self.grid.times.size, version == OLD_VERSION)
        since = self.grid.since(rollout.at)
        if version == rollout.version:
            return since
        return ~since if version == OLD_VERSION else np.zeros(self.grid.times.size, dtype=bool)

    def builds(self) -> list[str]:
        """Every build of the service run at some point: 1.8.2 first, then those deployed."""
        deployed = sorted({deploy.version for deploy in self.deploys.values()})
        return [OLD_BUILD, *[version for version in deployed if version != OLD_BUILD]]

    def build_mask(self, instance: str, version: str) -> np.ndarray:
        """When `instance` runs build `version`."""
        deploy = self.deploys.get(instance)
        if deploy is None:
            return np.full(self.grid.times.size, version == OLD_BUILD)
        since = self.grid.since(deploy.at)
        if version == deploy.version:
            return since
        return ~since if version == OLD_BUILD else np.zeros(self.grid.times.size, dtype=bool)

    def serving(self, version: str) -> np.ndarray:
        """When any instance serves `version` (a version is evaluated while it serves)."""
        return np.logical_or.reduce([self.version_mask(i, version) for i in INSTANCES])

    def restarted_at(self, instance: str) -> float | None:
        """The latest restart of `instance` (a model rollout or a deploy that restarted it)."""
        moments = [
            change.at
            for change in (self.rollouts.get(instance), self.deploys.get(instance))
            if change is not None and change.restart
        ]
        return max(moments) if moments else None

    def counter(self, rate_per_second: np.ndarray, instance: str) -> np.ndarray:
        """A counter of `instance`: from its process start, reset when it restarted."""
        return self.grid.counter(
            rate_per_second, self.started[instance], self.restarted_at(instance)
        )

    def request_rate(self, instance: str, route: str) -> np.ndarray:
        key = (instance, route)
        if key not in self._requests:
            noise = self.grid.noise(0.05, "requests", instance, route)
            traffic = ROUTES[route].requests_per_second * self.grid.traffic * noise
            self._requests[key] = traffic * self.factor(("requests", instance, route))
        return self._requests[key]

    # --- building series ----------------------------------------------------------------------

    def labels(self, **labels: str) -> str:
        pairs = {"service": self.service, **labels}
        return ",".join(f'{name}="{escape(value)}"' for name, value in pairs.items())

    def group(self, series: dict[str, list[str]], mask: np.ndarray | None = None) -> Group:
        """A Group from {prefix: formatted values}, keeping only the samples where `mask`."""
        if mask is None:
            return Group(list(series), list(series.values()), self.grid.time_text)
        keep = np.flatnonzero(mask)
        return Group(
            list(series),
            [[values[k] for k in keep] for values in series.values()],
            [self.grid.time_text[k] for k in keep],
        )

    def single(
        self, name: str, values: list[str], mask: np.ndarray | None = None, **labels: str
    ) -> Group:
        return self.group({f"{name}{{{self.labels(**labels)}}}": values}, mask)
