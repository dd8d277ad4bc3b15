"""high-error-rate: a failing route, version, upstream or modality, or a client-error surge.

The service's errors have several layers, and each cause leaves its mark on its own layer first:
a failing upstream shows in ``upstream_requests_total`` and then as 503s on every route that
calls it; a failing modality in ``inference_requests_total`` and then as 500s on the routes that
carry it; a bad version on the instances that took it; a route's own bug only on that route.
/v1/audio always fails most (audio decoding) and the model store always answers some calls with
errors (cold cache), so a workbook must compare each value with its own baseline.
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO, MODEL_INFO
from workbooks.synthetic.scenarios.fleet import (
    INSTANCES,
    MODEL,
    NEW_BUILD,
    NEW_VERSION,
    ROUTES,
    Fleet,
)
from workbooks.synthetic.scenarios.openmetrics import Family, Group, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "high-error-rate"

_SHARE = (
    'sum by (service) (rate(http_requests_total{{code=~"5..|429"}}[5m]{o}))'
    " / sum by (service) (rate(http_requests_total[5m]{o}))"
)
ALERT = AlertRule(
    alertname="HighErrorRate",
    severity="critical",
    # The team's rule covers every service; the alert's `service` label says which one fired.
    expr=f"{_SHARE.format(o='')} > 0.01 and {_SHARE.format(o='')} > 2 * "
    f"{_SHARE.format(o=' offset 1d')}",
    summary="High error rate on {service}",
    description="More than 1% of the requests to {service} fail (5xx or 429), over twice the "
    "share of a day earlier, for 5 minutes.",
)

# Normal share of each code per route: /v1/audio fails most (undecodable audio).
SERVER_ERRORS = {"/v1/chat": 0.005, "/v1/vision": 0.006, "/v1/audio": 0.025, "/v1/embed": 0.002}
SHARE_500 = 0.8  # of server errors; the rest are 503
CLIENT_ERRORS = {"400": 0.01, "404": 0.003, "429": 0.002}

# Upstreams: calls per request on each route, and the normal share of calls that fail.
UPSTREAMS: dict[str, tuple[dict[str, float], float]] = {
    "auth": (dict.fromkeys(ROUTES, 1.0), 0.001),
    "feature-store": ({"/v1/chat": 1.0, "/v1/vision": 1.0}, 0.004),
    "vector-db": ({"/v1/chat": 0.5, "/v1/embed": 1.0}, 0.003),
    "model-store": (dict.fromkeys(ROUTES, 0.05), 0.04),  # cold-cache misses: always the worst
}
UPSTREAM_503, UPSTREAM_504 = 0.7, 0.3

# What each route asks the models for: (model, modality, share of the route's requests).
OTHER_MODELS = {"whisper-asr": "1.2.0", "embed-small": "0.9.1"}
WORKLOAD: dict[str, tuple[tuple[str, str, float], ...]] = {
    "/v1/chat": ((MODEL, "text", 0.85), (MODEL, "vision", 0.15)),
    "/v1/vision": ((MODEL, "vision", 1.0),),
    "/v1/audio": (("whisper-asr", "audio", 1.0),),
    "/v1/embed": (("embed-small", "text", 1.0),),
}
INFERENCE_FAILURES = {"error": 0.003, "timeout": 0.001, "rejected": 0.0005}


def _route_shares(fleet: Fleet, instance: str, route: str) -> dict[str, np.ndarray]:
    """code -> share of the route's requests on this instance, with the causes' changes."""
    normal = {
        "500": SERVER_ERRORS[route] * SHARE_500,
        "503": SERVER_ERRORS[route] * (1 - SHARE_500),
        **CLIENT_ERRORS,
    }
    shares = {}
    for code, share in normal.items():
        key = ("errors", instance, route, code)
        noisy = share * fleet.grid.noise(0.15, "errors", instance, route, code)
        shares[code] = np.clip(noisy * fleet.factor(key) + fleet.offset(key), 0.0, 0.9)
    return {"200": np.clip(1 - sum(shares.values()), 0.0, 1.0), **shares}


def _requests(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        for route in ROUTES:
            rate = fleet.request_rate(instance, route)
            for code, share in _route_shares(fleet, instance, route).items():
                counts = ints(fleet.counter(rate * share, instance))
                groups.append(
                    fleet.single(
                        "http_requests_total", counts, instance=instance, route=route, code=code
                    )
                )
    return groups


def _upstreams(fleet: Fleet) -> list[Group]:
    # Summed over the fleet (METRICS.md: no instance label); counted from the oldest process.
    started = min(fleet.started.values())
    groups = []
    for upstream, (calls, failing) in UPSTREAMS.items():
        rate = sum(
            fleet.request_rate(i, route) * per_request
            for i in INSTANCES
            for route, per_request in calls.items()
        )
        key = ("upstream", upstream)
        share = failing * fleet.grid.noise(0.15, "upstream", upstream) * fleet.factor(key)
        share = np.clip(share + fleet.offset(key), 0.0, 1.0)
        parts = {"200": 1 - share, "503": share * UPSTREAM_503, "504": share * UPSTREAM_504}
        groups += [
            fleet.single(
                "upstream_requests_total",
                ints(fleet.grid.counter(rate * part, started)),
                upstream=upstream,
                code=code,
            )
            for code, part in parts.items()
        ]
    return groups


def _version_of(fleet: Fleet, instance: str, model: str) -> list[tuple[str, np.ndarray]]:
    if model != MODEL:
        return [(OTHER_MODELS[model], np.ones(fleet.grid.times.size, dtype=bool))]
    return [
        (version, mask)
        for version in fleet.versions()
        if (mask := fleet.version_mask(instance, version)).any()
    ]


def _inference(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        load: dict[tuple[str, str], np.ndarray] = {}
        for route, parts in WORKLOAD.items():
            for model, modality, share in parts:
                rate = fleet.request_rate(instance, route) * share
                load[(model, modality)] = load.get((model, modality), 0.0) + rate
        for (model, modality), rate in load.items():
            key = ("inference", instance, model, modality)
            noise = fleet.grid.noise(0.15, "inference", instance, model, modality)
            failed = {
                status: share * noise * fleet.factor((*key, status)) + fleet.offset((*key, status))
                for status, share in INFERENCE_FAILURES.items()
            }
            statuses = {"ok": 1 - sum(failed.values()), **failed}
            for version, mask in _version_of(fleet, instance, model):
                groups += [
                    fleet.single(
                        "inference_requests_total",
                        ints(fleet.counter(rate * share * mask, instance)),
                        mask,
                        instance=instance,
                        model=model,
                        model_version=version,
                        modality=modality,
                        status=status,
                    )
                    for status, share in statuses.items()
                ]
    return groups


REQUESTS = Family("http_requests", "counter", "HTTP requests by route and status code.", _requests)
UPSTREAM = Family(
    "upstream_requests", "counter", "Calls the service makes to its dependencies.", _upstreams
)
INFERENCE = Family(
    "inference_requests", "counter", "Model calls by model, modality and outcome.", _inference
)
FAMILIES = (REQUESTS, UPSTREAM, INFERENCE, MODEL_INFO, BUILD_INFO)


# --- causes ---------------------------------------------------------------------------------


def _shape(fleet: Fleet, size: float) -> np.ndarray:
    """`size` from onset on; a "ramp" case (affected shape=ramp) grows to it over 20 minutes."""
    if fleet.scenario.affected.get("shape") == "ramp":
        return size * np.clip(fleet.grid.hours_after * 3, 0.0, 1.0)
    return size * fleet.grid.after


def _server_errors(fleet: Fleet, instance: str, route: str, extra: np.ndarray, code: str) -> None:
    fleet.shift(("errors", instance, route, code), extra)


def _bad_route(fleet: Fleet) -> None:
    # A handler bug: the route answers 500 before any model or upstream is called.
    s = fleet.scenario
    for instance in INSTANCES:
        _server_errors(fleet, instance, s.affected["route"], _shape(fleet, s.magnitude), "500")


def _failing_upstream(fleet: Fleet) -> None:
    s = fleet.scenario
    upstream = s.affected["upstream"]
    calls, _ = UPSTREAMS[upstream]
    extra = _shape(fleet, s.magnitude)
    fleet.shift(("upstream", upstream), extra)
    for instance in INSTANCES:
        for route, per_request in calls.items():
            _server_errors(fleet, instance, route, np.minimum(extra * per_request, 1.0), "503")


def _bad_model_version(fleet: Fleet) -> None:
    s = fleet.scenario
    rolled = s.affected["instance"].split(",")
    fleet.roll_out(rolled, s.affected["model_version"])
    extra = _shape(fleet, s.magnitude)
    for instance in rolled:
        for modality in ("text", "vision"):
            fleet.shift(("inference", instance, MODEL, modality, "error"), extra)
        for route, parts in WORKLOAD.items():
            share = sum(part for model, _, part in parts if model == MODEL)
            if share:
                _server_errors(fleet, instance, route, extra * share, "500")


def _bad_build(fleet: Fleet) -> None:
    # The service's own build fails on every route of the instances it reached.
    s = fleet.scenario
    deployed = s.affected["instance"].split(",")
    # A hot reload: the process keeps running (and its counters), so the failures alone mark it.
    fleet.deploy(deployed, s.affected["version"], restart=False)
    for instance in deployed:
        for route in ROUTES:
            _server_errors(fleet, instance, route, _shape(fleet, s.magnitude), "500")


def _failing_modality(fleet: Fleet) -> None:
    s = fleet.scenario
    modality = s.affected["modality"]
    extra = _shape(fleet, s.magnitude)
    for instance in INSTANCES:
        for route, parts in WORKLOAD.items():
            for model, part_modality, share in parts:
                if part_modality == modality:
                    key = ("inference", instance, model, modality, "error")
                    fleet.shift(key, extra)
                    _server_errors(fleet, instance, route, extra * share, "500")


def _client_surge(fleet: Fleet) -> None:
    # One client floods a route and is rate limited: 429s, no server error.
    s = fleet.scenario
    for instance in INSTANCES:
        key = ("errors", instance, s.affected["route"], s.affected["code"])
        fleet.shift(key, _shape(fleet, s.magnitude))


def _rollout_then_upstream(fleet: Fleet) -> None:
    s = fleet.scenario
    # Three minutes before the upstream fails, with no effect of its own: looks guilty.
    fleet.roll_out(
        s.affected["instance"].split(","), s.affected["model_version"], minutes_from_onset=-3
    )
    _failing_upstream(fleet)


def _short_burst(fleet: Fleet) -> None:
    # A blip that fired the alert and ended: 503s everywhere for `magnitude` minutes.
    s = fleet.scenario
    minutes = (fleet.grid.times - fleet.grid.onset) / 60
    burst = np.where((minutes >= 0) & (minutes < s.magnitude), 0.06, 0.0)
    for instance in INSTANCES:
        for route in ROUTES:
            _server_errors(fleet, instance, route, burst, "503")


CAUSES = (
    Cause(
        name="bad_route",
        summary="one route answers 500 on every instance (a handler bug)",
        affected={"route": "/v1/embed", "shape": "step"},
        magnitude=0.015,
        plant=_bad_route,
    ),
    Cause(
        name="failing_upstream",
        summary="one upstream fails; 503s on the routes that call it",
        affected={"upstream": "feature-store", "shape": "step"},
        magnitude=0.15,
        plant=_failing_upstream,
    ),
    Cause(
        name="bad_model_version",
        summary="a model version, rolled out to some instances at onset, fails some calls",
        affected={"model_version": NEW_VERSION, "instance": "api-1,api-3", "shape": "step"},
        magnitude=0.08,
        plant=_bad_model_version,
    ),
    Cause(
        name="bad_build",
        summary="a build of the service, deployed to some instances at onset, fails requests",
        affected={"version": NEW_BUILD, "instance": "api-0,api-2", "shape": "step"},
        magnitude=0.05,
        plant=_bad_build,
    ),
    Cause(
        name="failing_modality",
        summary="one modality fails in the model on every instance",
        affected={"modality": "vision", "shape": "step"},
        magnitude=0.2,
        plant=_failing_modality,
    ),
    Cause(
        name="client_surge",
        summary="a client floods one route and is rate limited (429), no server error",
        affected={"route": "/v1/chat", "code": "429", "shape": "step"},
        magnitude=0.12,
        plant=_client_surge,
    ),
    Cause(
        name="rollout_then_upstream",
        summary="a model version rolls out on some instances just before an upstream fails",
        affected={
            "upstream": "feature-store",
            "model_version": NEW_VERSION,
            "instance": "api-0,api-2",
            "shape": "step",
        },
        magnitude=0.15,
        plant=_rollout_then_upstream,
    ),
    Cause(
        name="short_burst",
        summary="503s everywhere for a few minutes at onset, then over",
        affected={},
        magnitude=8.0,
        plant=_short_burst,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=1.0, plant=lambda _: None),
)

LABELS = {
    "upstream": tuple(UPSTREAMS),
    "modality": ("text", "vision", "audio"),
    "code": tuple(CLIENT_ERRORS),
    "shape": ("step", "ramp"),
}

DEMO = Case(
    id="demo",
    cause="bad_model_version",
    seed=9,
    expect={"model_version": NEW_VERSION, "instance": ("api-1", "api-3")},
)

CASES = (
    Case(
        id="err-route-embed",
        cause="bad_route",
        seed=31,
        # 0.2% -> ~1.7%: still below /v1/audio's normal 2.5%, the largest absolute value.
        expect={"route": "/v1/embed"},
    ),
    Case(
        id="err-upstream-auth",
        cause="failing_upstream",
        seed=32,
        magnitude=0.025,
        affected={"upstream": "auth", "shape": "ramp"},
        # 0.1% -> 2.6%, ramping: the model store's normal 4% stays the largest.
        expect={"upstream": "auth"},
    ),
    Case(
        id="err-version",
        cause="bad_model_version",
        seed=33,
        expect={"model_version": NEW_VERSION, "instance": ("api-1", "api-3")},
    ),
    Case(
        id="err-build",
        cause="bad_build",
        seed=34,
        affected={"instance": "api-2"},
        expect={"version": NEW_BUILD, "instance": "api-2"},
    ),
    Case(
        id="err-modality-vision",
        cause="failing_modality",
        seed=35,
        expect={"modality": "vision"},
    ),
    Case(
        id="err-client-429",
        cause="client_surge",
        seed=36,
        expect={"code": "429"},
    ),
    Case(
        id="err-innocent-rollout",
        cause="rollout_then_upstream",
        seed=37,
        expect={"upstream": "feature-store"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(id="err-burst-over", cause="short_burst", seed=38, expect={}),
)
