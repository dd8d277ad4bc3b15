"""Synthetic incident history: Prometheus metrics with one planted cause, for tests and demos.

A `Scenario` is one incident: a runbook, a cause, the culprit (`affected`), its size, a seed and
an onset. `Scenario.openmetrics()` renders its history as OpenMetrics text for
`promtool tsdb create-blocks-from openmetrics`; `Scenario.alert_payload()` is the Alertmanager
webhook that would have fired. History exists only where a workbook looks: the stretch before and
after the alert, and the same stretch one `baseline` earlier.

The fleet is the same in every scenario: one `service`, instances `api-0`..`api-3`, four routes
with different normal latencies, model `mm-llm` 2.3.1, and 2.4.0 rolled out at onset when the
cause involves a version. With the default magnitudes the largest absolute value is never the
culprit: `/v1/audio` stays the slowest route, `api-3` the largest process, `audio-transcribe` the
least accurate eval set, so a workbook must compare with the baseline to find the cause.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

MODEL = "mm-llm"
OLD_VERSION = "2.3.1"
NEW_VERSION = "2.4.0"
INSTANCES = ("api-0", "api-1", "api-2", "api-3")
GIB = 1024**3


class RouteProfile(NamedTuple):
    requests_per_second: float  # per instance, at the daily mean
    median_seconds: float  # of the lognormal latency
    sigma: float  # of log(latency)


# Tuned for what histogram_quantile(0.99, ...) reports over LATENCY_BUCKETS (linear interpolation
# inside a bucket overstates tail latency): chat ~0.5 s, vision ~0.24 s (~0.9 s at 4x), audio
# ~1.5 s, embed ~0.08 s.
ROUTES: dict[str, RouteProfile] = {
    "/v1/chat": RouteProfile(12.0, 0.15, 0.50),
    "/v1/vision": RouteProfile(4.0, 0.06, 0.45),
    "/v1/audio": RouteProfile(2.0, 0.45, 0.37),
    "/v1/embed": RouteProfile(20.0, 0.02, 0.45),
}
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ERROR_RATIOS = {"500": 0.004, "503": 0.001}
# eval set -> (modality, normal accuracy)
EVAL_SETS: dict[str, tuple[str, float]] = {
    "general": ("text", 0.86),
    "vision-qa": ("image", 0.81),
    "ocr": ("image", 0.93),
    "audio-transcribe": ("audio", 0.71),
}
RSS_GIB = {"api-0": 5.0, "api-1": 5.8, "api-2": 6.6, "api-3": 9.5}
MEMORY_LIMIT_BYTES = 16 * GIB
CPU_CORES = 1.2  # per instance at the daily mean

CAUSES: dict[str, tuple[str, ...]] = {
    "high-latency": ("slow_route", "bad_version", "none"),
    "high-memory": ("leak", "step", "none"),
    "accuracy-drop": ("version_regression", "none"),
}
# (runbook, cause) -> (default affected, default magnitude); "none" magnitudes mean "no change"
_DEFAULTS: dict[tuple[str, str], tuple[dict[str, str], float]] = {
    ("high-latency", "slow_route"): ({"route": "/v1/vision"}, 4.0),
    ("high-latency", "bad_version"): (
        {"model_version": NEW_VERSION, "instance": "api-1,api-3"},
        3.0,
    ),
    ("high-latency", "none"): ({}, 1.0),
    ("high-memory", "leak"): ({"instance": "api-1"}, 3.0),
    ("high-memory", "step"): ({"instance": "api-0", "model_version": NEW_VERSION}, 4.0),
    ("high-memory", "none"): ({}, 0.0),
    ("accuracy-drop", "version_regression"): (
        {"model_version": NEW_VERSION, "eval_set": "vision-qa"},
        0.06,
    ),
    ("accuracy-drop", "none"): ({}, 0.0),
}
# Only the families a runbook reads are written: the histogram alone is ~70% of a file.
_FAMILIES_BY_RUNBOOK = {
    "high-latency": ("latency", "requests", "model_info", "cpu"),
    "high-memory": ("memory", "memory_limit", "start_time", "model_info", "cpu"),
    "accuracy-drop": ("accuracy", "model_info", "requests"),
}
# kind -> (OpenMetrics family name, type, help); also the order families appear in a file
_FAMILY_META = {
    "latency": ("http_request_duration_seconds", "histogram", "HTTP request latency."),
    "requests": ("http_requests", "counter", "HTTP requests by route and status code."),
    "model_info": ("model_info", "gauge", "1 while this model version is loaded."),
    "cpu": ("process_cpu_seconds", "counter", "CPU time used by the process."),
    "memory": ("process_resident_memory_bytes", "gauge", "Resident memory of the process."),
    "memory_limit": ("container_spec_memory_limit_bytes", "gauge", "Container memory limit."),
    "start_time": ("process_start_time_seconds", "gauge", "Process start, Unix seconds."),
    "accuracy": ("model_eval_accuracy", "gauge", "Accuracy on an evaluation set, 0..1."),
}
# Data before the lookback so that rate()[5m] and avg_over_time()[15m] are full at its start.
_MARGIN = timedelta(minutes=20)
_ALERT_FOR = timedelta(minutes=5)


class _AlertRule(NamedTuple):
    alertname: str
    severity: str
    expr: str
    summary: str
    description: str


# The rules an on-call team would have written for these runbooks ($S is the service selector).
# They only decorate the payload's generatorURL: rules never evaluate over backfilled history.
_P99 = "histogram_quantile(0.99, sum by (service, route, le) (rate(http_request_duration_seconds_bucket$S[5m]{})))"  # noqa: E501
_ACCURACY = "avg without (model_version) (avg_over_time(model_eval_accuracy$S[30m]{}))"
_ALERTS = {
    "high-latency": _AlertRule(
        "HighLatency",
        "critical",
        f"max by (service) ({_P99.format('')} / {_P99.format(' offset 1d')}) > 2",
        "High request latency on {service}",
        "p99 latency of a route of {service} is more than twice what it was a day earlier.",
    ),
    "high-memory": _AlertRule(
        "HighMemoryUsage",
        "warning",
        "max by (service) (predict_linear(process_resident_memory_bytes$S[30m], 4 * 3600)"
        " / container_spec_memory_limit_bytes$S) > 1",
        "High memory usage on {service}",
        "At its current growth, memory of an instance of {service} reaches its limit within 4h.",
    ),
    "accuracy-drop": _AlertRule(
        "ModelAccuracyDrop",
        "critical",
        f"min by (service, model) ({_ACCURACY.format('')} - {_ACCURACY.format(' offset 1d')})"
        " < -0.03",
        "Model accuracy dropped on {service}",
        "An evaluation accuracy of {service} fell more than 3 points below a day earlier.",
    ),
}


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One synthetic incident; `make_scenario` fills the defaults.

    `magnitude` is per cause: the latency multiplier (slow_route, bad_version), GiB per hour
    (leak), GiB (step), accuracy lost in absolute terms (version_regression).
    """

    runbook: str
    cause: str
    affected: dict[str, str]
    magnitude: float
    seed: int
    onset: datetime
    service: str = "inference-api"
    lookback: timedelta = timedelta(hours=2)
    baseline: timedelta = timedelta(days=1)
    after_onset: timedelta = timedelta(minutes=40)
    step: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        if self.runbook not in CAUSES:
            raise ValueError(f"unknown runbook {self.runbook!r}; known: {', '.join(CAUSES)}")
        if self.cause not in CAUSES[self.runbook]:
            known = ", ".join(CAUSES[self.runbook])
            raise ValueError(f"{self.runbook} has no cause {self.cause!r}; known: {known}")
        if self.onset.utcoffset() is None:
            raise ValueError("onset must be timezone-aware (UTC)")
        if self.step <= timedelta(0):
            raise ValueError("step must be positive")
        if self.baseline <= self.end - self._start:
            # The two stretches would overlap and promtool would drop the repeated samples.
            raise ValueError("baseline must be longer than lookback + 20min + after_onset")
        wanted = set(_DEFAULTS[self.runbook, self.cause][0])
        if set(self.affected) != wanted:
            raise ValueError(f"{self.cause} needs affected keys {sorted(wanted)}")
        _check_affected(self.affected)

    @property
    def alert_starts_at(self) -> datetime:
        """When the alert fired: onset plus the rule's `for:`."""
        return self.onset + _ALERT_FOR

    @property
    def end(self) -> datetime:
        """The last sample's time."""
        return self.onset + self.after_onset

    @property
    def _start(self) -> datetime:
        return self.onset - self.lookback - _MARGIN

    @property
    def history_windows(self) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
        """The two stretches that hold samples, (baseline, current), ends inclusive."""
        return (self._start - self.baseline, self.end - self.baseline), (self._start, self.end)

    def alert_payload(self) -> dict[str, Any]:
        """The Alertmanager webhook (version 4) for this incident, firing, culprit not named."""
        rule = _ALERTS[self.runbook]
        labels = {"alertname": rule.alertname, "service": self.service, "severity": rule.severity}
        annotations = {
            "summary": rule.summary.format(service=self.service),
            "description": rule.description.format(service=self.service),
        }
        expr = rule.expr.replace("$S", f'{{service="{_escape(self.service)}"}}')
        group_labels = {"alertname": rule.alertname, "service": self.service}
        group_key = ", ".join(f'{name}="{value}"' for name, value in group_labels.items())
        alert = {
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": _rfc3339(self.alert_starts_at),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"http://prometheus.example/graph?g0.expr={quote(expr)}&g0.tab=1",
            "fingerprint": _fingerprint(labels),
        }
        return {
            "receiver": "workbooks",
            "status": "firing",
            "alerts": [alert],
            "groupLabels": group_labels,
            "commonLabels": dict(labels),
            "commonAnnotations": dict(annotations),
            "externalURL": "http://alertmanager.example:9093",
            "version": "4",
            "groupKey": f"{{}}:{{{group_key}}}",
            "truncatedAlerts": 0,
        }

    def openmetrics(self) -> str:
        """The whole history as OpenMetrics text, ending with ``# EOF``."""
        return _render([self])


def make_scenario(
    runbook: str,
    cause: str,
    *,
    affected: dict[str, str] | None = None,
    magnitude: float | None = None,
    seed: int = 0,
    onset: datetime | None = None,
    service: str = "inference-api",
    **kw: Any,
) -> Scenario:
    """A scenario with this runbook's defaults for `cause`; `affected` overrides key by key.

    `onset` defaults to 30 minutes ago, rounded down to the minute, so the history ends
    10 minutes in the future with the default `after_onset`.
    """
    if (runbook, cause) not in _DEFAULTS:
        known = ", ".join(f"{r}/{c}" for r, c in _DEFAULTS)
        raise ValueError(f"no scenario {runbook}/{cause}; known: {known}")
    default_affected, default_magnitude = _DEFAULTS[runbook, cause]
    if onset is None:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        onset = now - timedelta(minutes=30)
    return Scenario(
        runbook=runbook,
        cause=cause,
        affected={**default_affected, **(affected or {})},
        magnitude=default_magnitude if magnitude is None else magnitude,
        seed=seed,
        onset=onset,
        service=service,
        **kw,
    )


def write_openmetrics(scenarios: Sequence[Scenario], path: Path) -> Path:
    """Write several scenarios (distinct `service` values) into one OpenMetrics file."""
    services = [scenario.service for scenario in scenarios]
    if len(set(services)) != len(services):
        # Same series twice: promtool would silently keep only the first of each timestamp.
        raise ValueError(f"scenarios in one file need distinct services, got {services}")
    path = Path(path)
    path.write_text(_render(scenarios), encoding="utf-8")
    return path


# --- generation ------------------------------------------------------------------------------


class _Group(NamedTuple):
    """Series written together, timestamp by timestamp (a histogram's buckets, count and sum)."""

    prefixes: list[str]  # 'name{labels}' per series
    values: list[list[str]]  # formatted values, one list per series
    times: list[str]  # formatted timestamps shared by the series


class _History:
    """The sample grid of one scenario and the building blocks every metric family shares."""

    def __init__(self, scenario: Scenario) -> None:
        s = self.scenario = scenario
        step = s.step.total_seconds()
        (base_start, _), (start, end) = s.history_windows
        count = int((end - start).total_seconds() // step) + 1
        current = start.timestamp() + step * np.arange(count)
        baseline = current - s.baseline.total_seconds()
        self.times = np.concatenate([baseline, current])
        self.time_text = [_format_seconds(t) for t in self.times]
        onset = s.onset.timestamp()
        self.onset = onset
        self.after = self.times >= onset
        self.hours_after = np.where(self.after, (self.times - onset) / 3600, 0.0)
        # Peak at 15:00 UTC, trough at 03:00, +/-40%.
        hour = (self.times % 86400) / 3600
        self.traffic = 1 + 0.4 * np.sin(2 * np.pi * (hour - 9) / 24)
        self.new_version = s.affected.get("model_version", NEW_VERSION)
        rolled = {
            "bad_version": s.affected.get("instance", "").split(","),
            "step": [s.affected.get("instance", "")],
            "version_regression": list(INSTANCES),
        }.get(s.cause, [])
        self.rolled_out = {i: i in rolled for i in INSTANCES}
        # The step cause is a restart: the process starts anew at onset with the new model.
        self.restarted = {i: s.cause == "step" and i in rolled for i in INSTANCES}
        first = base_start.timestamp()
        self.started = {
            i: math.floor(first - 86400 * (1 + 3 * self._rng("start", i).random()))
            for i in INSTANCES
        }
        self._requests: dict[tuple[str, str], np.ndarray] = {}

    def _rng(self, *key: str) -> np.random.Generator:
        # One stream per series, so a cause and its quiet control share every baseline sample.
        return np.random.default_rng([self.scenario.seed, zlib.crc32("|".join(key).encode())])

    def _noise(self, sigma: float, *key: str) -> np.ndarray:
        return np.exp(self._rng(*key).normal(0.0, sigma, self.times.size))

    def _labels(self, **labels: str) -> str:
        pairs = {"service": self.scenario.service, **labels}
        return ",".join(f'{name}="{_escape(value)}"' for name, value in pairs.items())

    def _counter(self, rate_per_second: np.ndarray, instance: str) -> np.ndarray:
        """Integrate a rate from process start, resetting to zero at a restart."""
        previous = np.concatenate([[self.started[instance]], self.times[:-1]])
        restart = int(np.argmax(self.after)) if self.restarted[instance] else 0
        if restart:
            previous[restart] = self.onset
        total = np.cumsum(rate_per_second * (self.times - previous))
        if restart:
            total[restart:] -= total[restart - 1]
        return total

    def _version_mask(self, instance: str, version: str) -> np.ndarray:
        if not self.rolled_out[instance]:
            return np.full(self.times.size, version == OLD_VERSION)
        return self.after if version == self.new_version else ~self.after

    def request_rate(self, instance: str, route: str) -> np.ndarray:
        key = (instance, route)
        if key not in self._requests:
            noise = self._noise(0.05, "requests", instance, route)
            self._requests[key] = ROUTES[route].requests_per_second * self.traffic * noise
        return self._requests[key]

    def latency_factor(self, instance: str, route: str) -> np.ndarray:
        s = self.scenario
        hit = (s.cause == "slow_route" and route == s.affected["route"]) or (
            s.cause == "bad_version" and self.rolled_out[instance]
        )
        return np.where(self.after, s.magnitude, 1.0) if hit else np.ones(self.times.size)

    def group(self, series: dict[str, list[str]], mask: np.ndarray | None = None) -> _Group:
        """A _Group from {prefix: formatted values}, keeping only the samples where `mask`."""
        if mask is None:
            return _Group(list(series), list(series.values()), self.time_text)
        keep = np.flatnonzero(mask)
        return _Group(
            list(series),
            [[values[k] for k in keep] for values in series.values()],
            [self.time_text[k] for k in keep],
        )

    def single(
        self, name: str, values: list[str], mask: np.ndarray | None = None, **labels: str
    ) -> _Group:
        return self.group({f"{name}{{{self._labels(**labels)}}}": values}, mask)

    # One method per family kind in _FAMILY_META, each returning that family's groups.

    def latency(self) -> list[_Group]:
        groups = []
        for instance in INSTANCES:
            for route, profile in ROUTES.items():
                jitter = self._noise(0.03, "latency", instance, route)
                median = profile.median_seconds * self.latency_factor(instance, route) * jitter
                rate = self.request_rate(instance, route)
                series: dict[str, list[str]] = {}
                for le in LATENCY_BUCKETS:
                    below = _normal_cdf((math.log(le) - np.log(median)) / profile.sigma)
                    labels = self._labels(instance=instance, route=route, le=repr(le))
                    series[f"http_request_duration_seconds_bucket{{{labels}}}"] = _ints(
                        self._counter(rate * below, instance)
                    )
                count = _ints(self._counter(rate, instance))
                labels = self._labels(instance=instance, route=route)
                series[f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}}'] = count
                series[f"http_request_duration_seconds_count{{{labels}}}"] = count
                mean_seconds = median * math.exp(profile.sigma**2 / 2)
                seconds = self._counter(rate * mean_seconds, instance)
                series[f"http_request_duration_seconds_sum{{{labels}}}"] = _fixed(seconds, 3)
                groups.append(self.group(series))
        return groups

    def requests(self) -> list[_Group]:
        groups = []
        for instance in INSTANCES:
            for route in ROUTES:
                rate = self.request_rate(instance, route)
                error_share = {
                    code: share * self._noise(0.2, "errors", instance, route, code)
                    for code, share in ERROR_RATIOS.items()
                }
                shares = {"200": 1 - sum(error_share.values()), **error_share}
                groups += [
                    self.single(
                        "http_requests_total",
                        _ints(self._counter(rate * share, instance)),
                        instance=instance,
                        route=route,
                        code=code,
                    )
                    for code, share in shares.items()
                ]
        return groups

    def model_info(self) -> list[_Group]:
        ones = ["1"] * self.times.size
        return [
            self.single("model_info", ones, mask, instance=i, model=MODEL, model_version=version)
            for i in INSTANCES
            for version in (OLD_VERSION, self.new_version)
            if (mask := self._version_mask(i, version)).any()
        ]

    def cpu(self) -> list[_Group]:
        s = self.scenario
        groups = []
        for instance in INSTANCES:
            cores = CPU_CORES * self.traffic * self._noise(0.04, "cpu", instance)
            if s.cause == "bad_version" and self.rolled_out[instance]:
                cores *= np.where(self.after, 1 + 0.4 * (s.magnitude - 1), 1.0)
            seconds = _fixed(self._counter(cores, instance), 3)
            groups.append(self.single("process_cpu_seconds_total", seconds, instance=instance))
        return groups

    def memory(self) -> list[_Group]:
        s = self.scenario
        groups = []
        for instance in INSTANCES:
            rss = RSS_GIB[instance] * GIB * (1 + 0.03 * (self.traffic - 1))
            rss *= self._noise(0.004, "memory", instance)
            if instance == s.affected.get("instance"):
                if s.cause == "leak":
                    rss += s.magnitude * GIB * self.hours_after
                elif s.cause == "step":
                    rss += s.magnitude * GIB * self.after
            groups.append(
                self.single("process_resident_memory_bytes", _ints(rss), instance=instance)
            )
        return groups

    def memory_limit(self) -> list[_Group]:
        limit = [str(MEMORY_LIMIT_BYTES)] * self.times.size
        return [
            self.single("container_spec_memory_limit_bytes", limit, instance=i) for i in INSTANCES
        ]

    def start_time(self) -> list[_Group]:
        groups = []
        for instance in INSTANCES:
            started = np.full(self.times.size, float(self.started[instance]))
            if self.restarted[instance]:
                started[self.after] = self.onset
            groups.append(
                self.single("process_start_time_seconds", _ints(started), instance=instance)
            )
        return groups

    def accuracy(self) -> list[_Group]:
        s = self.scenario
        groups = []
        for version in (OLD_VERSION, self.new_version):
            # A version is evaluated while any instance serves it.
            serving = np.logical_or.reduce([self._version_mask(i, version) for i in INSTANCES])
            if not serving.any():
                continue
            for eval_set, (modality, accuracy) in EVAL_SETS.items():
                regressed = version == self.new_version and eval_set == s.affected.get("eval_set")
                level = accuracy - (s.magnitude if regressed else 0.0)
                noise = self._rng("accuracy", version, eval_set).normal(0, 0.004, self.times.size)
                values = _fixed(np.clip(level + noise, 0.0, 1.0), 5)
                labels = {"model": MODEL, "model_version": version, "eval_set": eval_set}
                groups.append(
                    self.single("model_eval_accuracy", values, serving, **labels, modality=modality)
                )
        return groups


def _render(scenarios: Sequence[Scenario]) -> str:
    # OpenMetrics forbids interleaving families, so all scenarios' series of a family go under
    # one header; each series' samples stay in time order, which is all promtool needs.
    by_kind: dict[str, list[_Group]] = {kind: [] for kind in _FAMILY_META}
    for scenario in scenarios:
        history = _History(scenario)
        for kind in _FAMILIES_BY_RUNBOOK[scenario.runbook]:
            by_kind[kind].extend(getattr(history, kind)())
    lines: list[str] = []
    for kind, groups in by_kind.items():
        if not groups:
            continue
        family, metric_type, help_text = _FAMILY_META[kind]
        lines += [f"# TYPE {family} {metric_type}", f"# HELP {family} {help_text}"]
        for prefixes, values, times in groups:
            for index, timestamp in enumerate(times):
                lines.extend(
                    f"{prefix} {series[index]} {timestamp}"
                    for prefix, series in zip(prefixes, values, strict=True)
                )
    lines.append("# EOF\n")
    return "\n".join(lines)


# --- small helpers ---------------------------------------------------------------------------


def _check_affected(affected: dict[str, str]) -> None:
    allowed = {"route": set(ROUTES), "instance": set(INSTANCES), "eval_set": set(EVAL_SETS)}
    if affected.get("model_version") == OLD_VERSION:
        raise ValueError(f"the rolled-out model_version must differ from {OLD_VERSION}")
    for key, value in affected.items():
        values = value.split(",") if key == "instance" else [value]
        if key in allowed and not set(values) <= allowed[key]:
            raise ValueError(f"affected {key}={value!r}; known: {', '.join(sorted(allowed[key]))}")


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _ints(values: np.ndarray) -> list[str]:
    # Floor keeps counters monotonic and a histogram's buckets cumulative after rounding.
    return [str(v) for v in np.floor(values).astype(np.int64).tolist()]


def _fixed(values: np.ndarray, digits: int) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.tolist()]


def _format_seconds(timestamp: float) -> str:
    # OpenMetrics timestamps are seconds; milliseconds would land in the year 58,000.
    rounded = round(timestamp, 3)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:.3f}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fingerprint(labels: dict[str, str]) -> str:
    # FNV-1a 64 over sorted names and values: what Alertmanager (0.25, checked) would send.
    digest = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"
