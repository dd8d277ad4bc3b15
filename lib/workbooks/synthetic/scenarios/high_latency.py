"""high-latency: a slow route, a slow version, or a rollout that is not to blame.

/v1/audio is always the slowest route, so a workbook must compare each route with its own
baseline to find the culprit.
"""

from __future__ import annotations

import math

import numpy as np

from workbooks.synthetic.scenarios.families import CPU, MODEL_INFO, REQUESTS
from workbooks.synthetic.scenarios.fleet import INSTANCES, NEW_VERSION, ROUTES, Fleet
from workbooks.synthetic.scenarios.grid import normal_cdf
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "high-latency"

_P99 = "histogram_quantile(0.99, sum by (service, route, le) (rate(http_request_duration_seconds_bucket$S[5m]{})))"  # noqa: E501
ALERT = AlertRule(
    alertname="HighLatency",
    severity="critical",
    expr=f"max by (service) ({_P99.format('')} / {_P99.format(' offset 1d')}) > 2",
    summary="High request latency on {service}",
    description="p99 latency of a route of {service} is more than twice what it was a day earlier.",
)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _latency(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        for route, profile in ROUTES.items():
            jitter = fleet.grid.noise(0.03, "latency", instance, route)
            median = profile.median_seconds * fleet.factor(("latency", instance, route)) * jitter
            rate = fleet.request_rate(instance, route)
            series: dict[str, list[str]] = {}
            for le in LATENCY_BUCKETS:
                below = normal_cdf((math.log(le) - np.log(median)) / profile.sigma)
                labels = fleet.labels(instance=instance, route=route, le=repr(le))
                series[f"http_request_duration_seconds_bucket{{{labels}}}"] = ints(
                    fleet.counter(rate * below, instance)
                )
            count = ints(fleet.counter(rate, instance))
            labels = fleet.labels(instance=instance, route=route)
            series[f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}}'] = count
            series[f"http_request_duration_seconds_count{{{labels}}}"] = count
            mean_seconds = median * math.exp(profile.sigma**2 / 2)
            seconds = fleet.counter(rate * mean_seconds, instance)
            series[f"http_request_duration_seconds_sum{{{labels}}}"] = fixed(seconds, 3)
            groups.append(fleet.group(series))
    return groups


LATENCY = Family("http_request_duration_seconds", "histogram", "HTTP request latency.", _latency)
FAMILIES = (LATENCY, REQUESTS, MODEL_INFO, CPU)


def _slow_route(fleet: Fleet) -> None:
    s = fleet.scenario
    for instance in INSTANCES:
        fleet.scale(("latency", instance, s.affected["route"]), fleet.after_onset(s.magnitude))


def _bad_version(fleet: Fleet) -> None:
    s = fleet.scenario
    rolled = s.affected["instance"].split(",")
    fleet.roll_out(rolled, s.affected["model_version"])
    for instance in rolled:
        for route in ROUTES:
            fleet.scale(("latency", instance, route), fleet.after_onset(s.magnitude))
        # A slower model burns more CPU per request, though less than its latency rose.
        fleet.scale(("cpu", instance), fleet.after_onset(1 + 0.4 * (s.magnitude - 1)))


def _innocent_rollout(fleet: Fleet) -> None:
    s = fleet.scenario
    # Three minutes before the route slows down: close enough to look guilty.
    fleet.roll_out(
        s.affected["instance"].split(","), s.affected["model_version"], minutes_from_onset=-3
    )
    _slow_route(fleet)


CAUSES = (
    Cause(
        name="slow_route",
        summary="one route slows down on every instance",
        affected={"route": "/v1/vision"},
        magnitude=4.0,
        plant=_slow_route,
    ),
    Cause(
        name="bad_version",
        summary="a new model version, rolled out to some instances at onset, is slower",
        affected={"model_version": NEW_VERSION, "instance": "api-1,api-3"},
        magnitude=3.0,
        plant=_bad_version,
    ),
    Cause(
        name="innocent_rollout",
        summary="a version rolls out to some instances just before one route slows everywhere",
        affected={"route": "/v1/chat", "model_version": NEW_VERSION, "instance": "api-0,api-2"},
        magnitude=3.0,
        plant=_innocent_rollout,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=1.0, plant=lambda _: None),
)

DEMO = Case(id="demo", cause="bad_version", seed=7, expect={"model_version": NEW_VERSION})

CASES = (
    Case(
        id="lat-vision", cause="slow_route", seed=11, magnitude=4.0, expect={"route": "/v1/vision"}
    ),
    Case(
        id="lat-chat",
        cause="slow_route",
        seed=12,
        magnitude=2.5,
        affected={"route": "/v1/chat"},
        expect={"route": "/v1/chat"},
    ),
    Case(
        id="lat-embed",
        cause="slow_route",
        seed=13,
        magnitude=6.0,
        affected={"route": "/v1/embed"},
        expect={"route": "/v1/embed"},
    ),
    Case(
        id="lat-version",
        cause="bad_version",
        seed=14,
        magnitude=3.0,
        expect={"model_version": NEW_VERSION},
    ),
    Case(
        id="lat-innocent-rollout",
        cause="innocent_rollout",
        seed=16,
        magnitude=3.0,
        expect={"route": "/v1/chat"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(id="lat-quiet", cause="none", seed=15, expect={}),
)
