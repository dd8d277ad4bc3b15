"""unauthorized-access: stuffing, a revoked key hammering, a breach, or a deploy that broke auth.

The service authenticates every request (`auth_requests_total{route, client_id, result,
reason}`, no `instance`: auth is counted per service). Eight known clients call it every day;
`partner-globex` always fails a fifth of its requests (`forbidden`: it calls a vision model its
plan excludes), so it is the largest source of failures on a normal day and a workbook must
judge each client against its own history. `ops-console` is a tiny client, the only one that
calls the admin route: a breach through it is small in absolute numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO
from workbooks.synthetic.scenarios.fleet import INSTANCES, NEW_BUILD, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "unauthorized-access"

ALERT = AlertRule(
    alertname="HighAuthFailureRate",
    severity="warning",
    expr='sum by (service) (rate(auth_requests_total$S{result="failure"}[5m])) > 3 * sum by '
    '(service) (rate(auth_requests_total$S{result="failure"}[5m] offset 1d))',
    summary="Authentication failures on {service} are more than 3x their level a day earlier",
    description="Requests to {service} fail authentication at more than three times the rate of "
    "the same time yesterday.",
)

ADMIN_ROUTE = "/v1/admin/keys"
# client -> route -> requests per second at the daily mean.
CLIENTS: dict[str, dict[str, float]] = {
    "ios-app": {"/v1/chat": 9.0, "/v1/vision": 3.0},
    "android-app": {"/v1/chat": 7.0, "/v1/audio": 2.0},
    "web-frontend": {"/v1/chat": 5.0, "/v1/embed": 3.0},
    "partner-acme": {"/v1/embed": 6.0},
    "batch-indexer": {"/v1/embed": 4.0},
    "partner-globex": {"/v1/vision": 2.0},
    "ops-console": {ADMIN_ROUTE: 0.08, "/v1/chat": 0.3},
    "billing-sync": {"/v1/admin/usage": 0.2},
}
# Share of a known client's requests that fail on a normal day, by reason.
NORMAL_FAILURES = {"expired_token": 0.006, "invalid_token": 0.002}
ALWAYS_FORBIDDEN = {"partner-globex": 0.2}
REASONS = ("invalid_token", "expired_token", "revoked_key", "forbidden", "bad_signature")
_STARTED_DAYS = 3  # the counters run from three days before the history


@dataclass(frozen=True)
class Stranger:
    """A client never seen before (credential stuffing): its failures per second."""

    client_id: str
    route: str
    reason: str
    failures: np.ndarray


# Clients a cause adds (the stuffing's strangers), beside the fleet they belong to.
_STRANGERS: WeakKeyDictionary[Fleet, list[Stranger]] = WeakKeyDictionary()


def _counter(fleet: Fleet, rate: np.ndarray) -> list[str]:
    started = fleet.grid.first - _STARTED_DAYS * 86400
    return ints(fleet.grid.counter(rate, started))


def _from_first(rate: np.ndarray) -> np.ndarray:
    """Where a series exists: from one sample before its first event (a counter appears then)."""
    first = np.flatnonzero(rate > 0)
    mask = np.zeros(rate.size, dtype=bool)
    if first.size:
        mask[max(first[0] - 1, 0) :] = True
    return mask


def _auth(fleet: Fleet) -> list[Group]:
    groups = []
    for client, routes in CLIENTS.items():
        for route, rps in routes.items():
            rate = rps * fleet.grid.traffic * fleet.grid.noise(0.05, "auth", client, route)
            shares = {**NORMAL_FAILURES, "forbidden": ALWAYS_FORBIDDEN.get(client, 0.0)}
            failed = 0.0
            for reason in REASONS:
                share = shares.get(reason, 0.0) * fleet.grid.noise(0.1, "fail", client, reason)
                failures = rate * share + fleet.offset(("auth_fail", client, route, reason))
                failed = failed + rate * share
                if (mask := _from_first(failures)).any():
                    labels = {"client_id": client, "route": route, "reason": reason}
                    groups.append(_series(fleet, failures, mask, result="failure", **labels))
            success = (rate - failed) * fleet.factor(("auth_success", client, route))
            success = success + fleet.offset(("auth_success", client, route))
            labels = {"client_id": client, "route": route, "reason": "ok"}
            groups.append(_series(fleet, success, None, result="success", **labels))
    for stranger in _STRANGERS.get(fleet, []):
        groups.append(
            _series(
                fleet,
                stranger.failures,
                _from_first(stranger.failures),
                client_id=stranger.client_id,
                route=stranger.route,
                result="failure",
                reason=stranger.reason,
            )
        )
    return groups


def _series(fleet: Fleet, rate: np.ndarray, mask: np.ndarray | None, **labels: str) -> Group:
    return fleet.single("auth_requests_total", _counter(fleet, rate), mask, **labels)


AUTH = Family("auth_requests", "counter", "Authentication outcomes of requests.", _auth)
FAMILIES = (AUTH, BUILD_INFO)  # only what the workbook reads


def _stuffing(fleet: Fleet) -> None:
    """`magnitude` clients never seen before try tokens on one route; they join over 15 min."""
    s = fleet.scenario
    rng = fleet.grid.rng("stuffing")
    count = int(s.magnitude)
    joins = fleet.grid.onset + 900 * rng.random(count)
    rates = rng.uniform(0.03, 0.12, count)
    _STRANGERS[fleet] = [
        Stranger(
            client_id=f"anon-{rng.integers(16**6):06x}",
            route=s.affected["stuffed_route"],
            reason=s.affected["reason"],
            failures=np.where(fleet.grid.since(joins[k]), rates[k], 0.0),
        )
        for k in range(count)
    ]


def _revoked_key(fleet: Fleet) -> None:
    """A client keeps calling with a revoked key, retrying: `magnitude` x its traffic fails."""
    s = fleet.scenario
    client = s.affected["client_id"]
    for route, rps in CLIENTS[client].items():
        fleet.scale(("auth_success", client, route), fleet.after_onset(0.0))
        retries = rps * fleet.grid.traffic * s.magnitude
        if s.affected["shape"] == "ramp":  # retries back off less and less: a ramp over 20 min
            retries = retries * np.clip(fleet.grid.hours_after * 3, 0, 1)
        fleet.shift(("auth_fail", client, route, s.affected["reason"]), retries * fleet.grid.after)


def _breach(fleet: Fleet) -> None:
    """A burst of failures from one client on one route (`magnitude`/s for 10 min), then its
    successes there at six times their usual rate: someone found a working credential."""
    s = fleet.scenario
    client, route = s.affected["client_id"], s.affected["breached_route"]
    minutes = (fleet.grid.times - fleet.grid.onset) / 60
    burst = (minutes >= 0) & (minutes < 10)
    fleet.shift(("auth_fail", client, route, s.affected["reason"]), s.magnitude * burst)
    usual = CLIENTS[client][route] * fleet.grid.traffic
    fleet.shift(("auth_success", client, route), 5.0 * usual * (minutes >= 11))


def _broken_deploy(fleet: Fleet) -> None:
    """A new build rejects `magnitude` of every client's valid tokens from the deploy on."""
    s = fleet.scenario
    fleet.deploy(INSTANCES, s.affected["version"])
    for client, routes in CLIENTS.items():
        for route, rps in routes.items():
            fleet.scale(("auth_success", client, route), fleet.after_onset(1 - s.magnitude))
            rejected = rps * fleet.grid.traffic * s.magnitude * fleet.grid.after
            fleet.shift(("auth_fail", client, route, s.affected["reason"]), rejected)


def _revoked_during_deploy(fleet: Fleet) -> None:
    """A deploy five minutes before a revoked key starts hammering; the deploy changes nothing."""
    fleet.deploy(INSTANCES, fleet.scenario.affected["version"], minutes_from_onset=-5)
    _revoked_key(fleet)


_REVOKED = {"client_id": "partner-acme", "reason": "revoked_key", "shape": "step"}
CAUSES = (
    Cause(
        name="stuffing",
        summary="many clients never seen before fail with one reason on one route",
        affected={"reason": "invalid_token", "stuffed_route": "/v1/chat"},
        magnitude=120,
        plant=_stuffing,
    ),
    Cause(
        name="revoked_key",
        summary="one known client keeps calling with a revoked key, retrying",
        affected=dict(_REVOKED),
        magnitude=3.0,
        plant=_revoked_key,
    ),
    Cause(
        name="breach",
        summary="a burst of failures from one client on one route, then successes there",
        affected={
            "client_id": "ops-console",
            "breached_route": ADMIN_ROUTE,
            "reason": "bad_signature",
        },
        magnitude=0.25,
        plant=_breach,
    ),
    Cause(
        name="broken_deploy",
        summary="a new build rejects valid tokens of every client",
        affected={"version": NEW_BUILD, "reason": "bad_signature"},
        magnitude=0.9,
        plant=_broken_deploy,
    ),
    Cause(
        name="revoked_during_deploy",
        summary="a deploy 5 min before a revoked key starts hammering (not the cause)",
        affected={**_REVOKED, "version": NEW_BUILD},
        magnitude=3.0,
        plant=_revoked_during_deploy,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=1.0, plant=lambda _: None),
)

DEMO = Case(
    id="demo",
    cause="breach",
    seed=31,
    expect={"client_id": "ops-console", "route": ADMIN_ROUTE},
)

CASES = (
    Case(
        id="auth-stuffing",
        cause="stuffing",
        seed=41,
        magnitude=120,
        expect={"reason": "invalid_token"},
    ),
    Case(
        id="auth-stuffing-small",
        cause="stuffing",
        seed=42,
        magnitude=40,
        affected={"reason": "bad_signature", "stuffed_route": "/v1/embed"},
        expect={"reason": "bad_signature"},
    ),
    Case(
        id="auth-revoked-key",
        cause="revoked_key",
        seed=43,
        magnitude=3.0,
        expect={"client_id": "partner-acme"},
    ),
    Case(
        id="auth-revoked-ramp",
        cause="revoked_key",
        seed=44,
        magnitude=4.0,
        affected={"client_id": "batch-indexer", "shape": "ramp"},
        expect={"client_id": "batch-indexer"},
    ),
    # The breach is small next to partner-globex's everyday failures: not the largest value.
    Case(
        id="auth-breach-admin",
        cause="breach",
        seed=45,
        magnitude=0.25,
        expect={"client_id": "ops-console", "route": ADMIN_ROUTE},
    ),
    # On an ordinary route, from the client that always fails most: a warning, not critical.
    Case(
        id="auth-breach-route",
        cause="breach",
        seed=49,
        magnitude=2.5,
        affected={"client_id": "partner-globex", "breached_route": "/v1/vision"},
        expect={"client_id": "partner-globex", "route": "/v1/vision"},
    ),
    Case(
        id="auth-broken-deploy",
        cause="broken_deploy",
        seed=46,
        magnitude=0.9,
        expect={"version": NEW_BUILD},
    ),
    Case(
        id="auth-revoked-deploy",
        cause="revoked_during_deploy",
        seed=47,
        magnitude=3.0,
        expect={"client_id": "partner-acme"},
        not_named={"version": NEW_BUILD},
    ),
    Case(id="auth-quiet", cause="none", seed=48, expect={}),
)
