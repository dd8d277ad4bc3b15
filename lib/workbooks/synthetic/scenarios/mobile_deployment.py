"""android-deployment and ios-deployment: the app telemetry both runbooks read, and their causes.

Not a runbook's module itself (no ``RUNBOOK``): ``android_deployment.py`` and
``ios_deployment.py`` declare each runbook from :func:`families`, :func:`causes` and a
:class:`Fleetwide` per platform, so only what truly differs between the platforms differs (OS
versions, backends, traffic, the rollout share).

The series are the app telemetry pipeline's (METRICS.md): sessions and crashes per app version,
OS version and device class; on-device inference latency per backend and device class; model
downloads per app version; the store's rollout share per version. The pipeline tags every series
with the app's name as ``service`` (here the case's ``svc-<id>``), which is how a shared
Prometheus keeps the cases apart and how the alert names its app.

Shapes a workbook must see through: old OS versions and low-end devices always crash more and
run slower; the largest OS version has the most crashes in absolute numbers; a new version
starts with few sessions (a staged rollout).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbooks.synthetic.scenarios.fleet import Fleet
from workbooks.synthetic.scenarios.grid import normal_cdf
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed, ints
from workbooks.synthetic.scenarios.scenario import Cause

DEVICE_CLASSES = {"high_end": 0.30, "mid_range": 0.45, "low_end": 0.25}  # share of sessions
DEVICE_CRASH = {"high_end": 1.0, "mid_range": 1.2, "low_end": 1.6}  # crash-rate multiplier
DEVICE_SLOWER = {"high_end": 1.0, "mid_range": 1.8, "low_end": 3.5}  # latency multiplier
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LATENCY_SIGMA = 0.45
INFERENCES_PER_SESSION_SECOND = 0.5
DOWNLOADS_PER_SESSION = 0.02
DOWNLOAD_FAILURE = 0.004  # share of model downloads failing normally
OLDER_SHARE = 0.10  # sessions still on the version before the previous one
ADOPTION = 0.8  # share of the rollout's devices that opened the new version yet


@dataclass(frozen=True, kw_only=True)
class Fleetwide:
    """One platform's app fleet: its versions, OS versions, backends and traffic."""

    platform: str  # the `platform` label: android or ios
    versions: tuple[str, str, str]  # older, previous, new
    os_versions: dict[str, float]  # OS version -> share of sessions
    os_crash: dict[str, float]  # OS version -> crashes per session, normally
    backends: dict[str, tuple[float, float]]  # backend -> (share of inferences, median s)
    sessions_per_second: float
    rollout_share: float  # the staged rollout / phased release share of the new version

    @property
    def new(self) -> str:
        return self.versions[2]

    @property
    def previous(self) -> str:
        return self.versions[1]

    def labels(self) -> dict[str, tuple[str, ...]]:
        """Allowed values of the `affected` keys (the scenario registry checks them)."""
        return {
            "app_version": (self.new,),
            "os_version": tuple(self.os_versions),
            "device_class": tuple(DEVICE_CLASSES),
            "backend": tuple(self.backends),
        }


# --- what a cause leaves on the fleet, and what the families read back --------------------------


def release(fleet: Fleet, minutes_from_onset: float) -> None:
    """The new version's staged rollout starts `minutes_from_onset` after the onset."""
    fleet.shift(("release",), fleet.grid.since(fleet.grid.onset + 60 * minutes_from_onset))


def _released(fleet: Fleet) -> np.ndarray:
    return fleet.offset(("release",)) > 0


def _version_share(app: Fleetwide, fleet: Fleet, version: str) -> np.ndarray:
    new_share = np.where(_released(fleet), app.rollout_share * ADOPTION, 0.0)
    if version == app.new:
        return new_share
    if version == app.previous:
        return 1.0 - OLDER_SHARE - new_share
    return np.full(fleet.grid.times.size, OLDER_SHARE)


def _present(app: Fleetwide, fleet: Fleet, version: str) -> np.ndarray:
    """When a version has users: the new one only once it is released."""
    if version == app.new:
        return _released(fleet)
    return np.ones(fleet.grid.times.size, dtype=bool)


def _counter(fleet: Fleet, rate: np.ndarray) -> list[str]:
    # The pipeline's counters run from well before the window; a version's from its release.
    return ints(fleet.grid.counter(rate, fleet.grid.first - 86400))


# --- the families ------------------------------------------------------------------------------


def _sessions_and_crashes(app: Fleetwide, fleet: Fleet) -> list[Group]:
    groups = []
    for version in app.versions:
        share = _version_share(app, fleet, version)
        for os_version, os_share in app.os_versions.items():
            for device, device_share in DEVICE_CLASSES.items():
                key = (version, os_version, device)
                noise = fleet.grid.noise(0.04, "sessions", *key)
                sessions = app.sessions_per_second * fleet.grid.traffic * noise
                sessions = sessions * share * os_share * device_share
                crash = app.os_crash[os_version] * DEVICE_CRASH[device]
                crash = crash * fleet.grid.noise(0.06, "crashes", *key)
                crash = crash * fleet.factor(("crash", version, os_version))
                crash = crash * fleet.factor(("crash", "*"))
                labels = fleet.labels(
                    platform=app.platform,
                    app_version=version,
                    os_version=os_version,
                    device_class=device,
                )
                series = {
                    f"app_sessions_total{{{labels}}}": _counter(fleet, sessions),
                    f"app_crashes_total{{{labels}}}": _counter(fleet, sessions * crash),
                }
                groups.append(fleet.group(series, _present(app, fleet, version)))
    return groups


def _inference(app: Fleetwide, fleet: Fleet) -> list[Group]:
    groups = []
    for version in app.versions:
        share = _version_share(app, fleet, version)
        for backend, (backend_share, median_seconds) in app.backends.items():
            for device, device_share in DEVICE_CLASSES.items():
                key = (version, backend, device)
                rate = app.sessions_per_second * fleet.grid.traffic * share * device_share
                rate = rate * backend_share * INFERENCES_PER_SESSION_SECOND
                median = median_seconds * DEVICE_SLOWER[device]
                median = median * fleet.factor(("latency", backend, device))
                median = median * fleet.factor(("latency", version, backend, device))
                median = median * fleet.grid.noise(0.03, "latency", *key)
                labels = fleet.labels(
                    platform=app.platform, app_version=version, backend=backend, device_class=device
                )
                series: dict[str, list[str]] = {}
                for le in LATENCY_BUCKETS:
                    below = normal_cdf((math.log(le) - np.log(median)) / LATENCY_SIGMA)
                    name = f'ondevice_inference_duration_seconds_bucket{{{labels},le="{le!r}"}}'
                    series[name] = _counter(fleet, rate * below)
                count = _counter(fleet, rate)
                series[f'ondevice_inference_duration_seconds_bucket{{{labels},le="+Inf"}}'] = count
                series[f"ondevice_inference_duration_seconds_count{{{labels}}}"] = count
                mean = median * math.exp(LATENCY_SIGMA**2 / 2)
                seconds = fleet.grid.counter(rate * mean, fleet.grid.first - 86400)
                series[f"ondevice_inference_duration_seconds_sum{{{labels}}}"] = fixed(seconds, 3)
                groups.append(fleet.group(series, _present(app, fleet, version)))
    return groups


def _downloads(app: Fleetwide, fleet: Fleet) -> list[Group]:
    groups = []
    for version in app.versions:
        share = _version_share(app, fleet, version)
        rate = app.sessions_per_second * fleet.grid.traffic * share * DOWNLOADS_PER_SESSION
        rate = rate * fleet.grid.noise(0.05, "downloads", version)
        failing = DOWNLOAD_FAILURE * fleet.grid.noise(0.1, "download-failures", version)
        failing = np.clip(failing + fleet.offset(("download_failure", version)), 0.0, 1.0)
        series = {}
        for result, part in (("success", 1.0 - failing), ("failure", failing)):
            labels = fleet.labels(platform=app.platform, app_version=version, result=result)
            series[f"ondevice_model_downloads_total{{{labels}}}"] = _counter(fleet, rate * part)
        groups.append(fleet.group(series, _present(app, fleet, version)))
    return groups


def _rollout(app: Fleetwide, fleet: Fleet) -> list[Group]:
    groups = []
    for version, share in ((app.previous, 1.0), (app.new, app.rollout_share)):
        values = fixed(np.full(fleet.grid.times.size, share), 3)
        labels = {"platform": app.platform, "app_version": version}
        groups.append(
            fleet.single("app_rollout_fraction", values, _present(app, fleet, version), **labels)
        )
    return groups


def families(app: Fleetwide) -> tuple[Family, ...]:
    """The metric families of METRICS.md for one platform's fleet."""

    def bind(write: Callable[[Fleetwide, Fleet], list[Group]]) -> Callable[[Fleet], list[Group]]:
        return lambda fleet: write(app, fleet)

    return (
        Family("app_sessions", "counter", "App sessions started.", bind(_sessions_and_crashes)),
        Family(
            "ondevice_inference_duration_seconds",
            "histogram",
            "On-device model inference time.",
            bind(_inference),
        ),
        Family("ondevice_model_downloads", "counter", "Model downloads.", bind(_downloads)),
        Family("app_rollout_fraction", "gauge", "Staged rollout share (0..1).", bind(_rollout)),
    )


# --- the causes --------------------------------------------------------------------------------


def causes(app: Fleetwide) -> tuple[Cause, ...]:
    """What each runbook must tell apart, as effects on this platform's fleet."""

    def crash_on_os(fleet: Fleet) -> None:
        s = fleet.scenario
        release(fleet, 0)
        for os_version in s.affected["os_version"].split(","):
            fleet.scale(("crash", s.affected["app_version"], os_version), s.magnitude)

    def slow_backend(fleet: Fleet) -> None:
        s = fleet.scenario
        # The release went out an hour and a half earlier, without trouble.
        release(fleet, -90)
        key = ("latency", s.affected["backend"], s.affected["device_class"])
        fleet.scale(key, fleet.after_onset(s.magnitude))

    def slow_new_version(fleet: Fleet) -> None:
        s = fleet.scenario
        release(fleet, 0)
        key = ("latency", s.affected["app_version"], s.affected["backend"])
        fleet.scale((*key, s.affected["device_class"]), s.magnitude)

    def download_failures(fleet: Fleet) -> None:
        s = fleet.scenario
        release(fleet, 0)
        fleet.shift(("download_failure", s.affected["app_version"]), s.magnitude)

    def crashes_everywhere(fleet: Fleet) -> None:
        s = fleet.scenario
        # The release goes out 5 minutes before crashes rise on every version (a server-side
        # change): close enough to look guilty.
        release(fleet, -5)
        fleet.scale(("crash", "*"), fleet.after_onset(s.magnitude))

    return (
        Cause(
            name="crash_on_os",
            summary="the new app version crashes on some OS versions",
            affected={"app_version": app.new, "os_version": tuple(app.os_versions)[-2]},
            magnitude=5.0,
            plant=crash_on_os,
        ),
        Cause(
            name="slow_backend",
            summary="one on-device backend slows down on one device class",
            affected={"backend": "gpu", "device_class": "high_end"},
            magnitude=3.0,
            plant=slow_backend,
        ),
        Cause(
            name="slow_new_version",
            summary="the new app version runs one backend slower on one device class",
            affected={"app_version": app.new, "backend": "gpu", "device_class": "high_end"},
            magnitude=3.0,
            plant=slow_new_version,
        ),
        Cause(
            name="download_failures",
            summary="model downloads fail for the new app version",
            affected={"app_version": app.new},
            magnitude=0.25,
            plant=download_failures,
        ),
        Cause(
            name="crashes_everywhere",
            summary="crashes rise on every app version alike, minutes after a release",
            affected={"app_version": app.new},
            magnitude=2.5,
            plant=crashes_everywhere,
        ),
        Cause(
            name="none",
            summary="a release goes out and nothing changes",
            affected={},
            magnitude=1.0,
            plant=lambda fleet: release(fleet, 0),
        ),
    )
