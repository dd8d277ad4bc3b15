"""anomalous-traffic: a flooding client, a wave of new clients, prompt stuffing, a dropped route.

Traffic here is weekly: the onset's weekday is the week's peak (half again the other days, as
Mondays are for a business API), so every case sits on a peak that a one-day baseline would
call a surge. The workbook compares with the same window a week earlier and the days between
(`SCENARIO`: a 7-day baseline, every day between sampled too).

The clients differ in size by 75x, with a tail below the top 10 that the workbook's topk
queries show; the flooding client is a small one (in one case from that tail), the new country
is small next to the usual ones, and the prompt-stuffing client keeps its request rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO
from workbooks.synthetic.scenarios.fleet import INSTANCES, NEW_BUILD, ROUTES, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "anomalous-traffic"
# A weekly baseline, and the same window on each day between (see the module docstring).
SCENARIO = {"baseline": timedelta(days=7), "days_between": True}

_RATE = "sum by (service) (rate(http_requests_total$S[10m]{}))"
ALERT = AlertRule(
    alertname="AnomalousTraffic",
    severity="warning",
    expr=f"{_RATE.format('')} / {_RATE.format(' offset 7d')} > 1.5 or "
    f"{_RATE.format('')} / {_RATE.format(' offset 7d')} < 0.6",
    summary="Anomalous traffic on {service}",
    description="Requests or tokens of {service} are unlike the same window a week earlier.",
)


class Client(NamedTuple):
    country: str
    requests_per_second: float  # at the daily mean, on an ordinary weekday
    routes: dict[str, float]  # share of its requests per route
    input_tokens: float  # per request
    output_tokens: float  # per request


CLIENTS: dict[str, Client] = {
    "acme-prod": Client("US", 30.0, {"/v1/chat": 0.6, "/v1/embed": 0.4}, 450, 180),
    "globex": Client("DE", 18.0, {"/v1/embed": 0.7, "/v1/chat": 0.3}, 160, 40),
    "initech": Client("US", 12.0, {"/v1/chat": 0.5, "/v1/vision": 0.5}, 700, 220),
    "umbrella": Client("JP", 9.0, {"/v1/chat": 1.0}, 520, 260),
    "hooli": Client("GB", 7.0, {"/v1/vision": 0.6, "/v1/audio": 0.4}, 900, 150),
    "stark-labs": Client("US", 5.0, {"/v1/chat": 0.7, "/v1/embed": 0.3}, 380, 160),
    "wayne-ent": Client("FR", 4.0, {"/v1/vision": 1.0}, 1100, 120),
    "tyrell": Client("BR", 3.0, {"/v1/audio": 0.5, "/v1/chat": 0.5}, 300, 200),
    "soylent": Client("CA", 2.0, {"/v1/chat": 1.0}, 600, 300),
    # The long tail: below the top 10 the workbook's topk queries show.
    "pied-piper": Client("US", 1.0, {"/v1/embed": 1.0}, 200, 20),
    "cyberdyne": Client("JP", 0.8, {"/v1/chat": 1.0}, 400, 200),
    "oscorp": Client("US", 0.6, {"/v1/chat": 1.0}, 450, 150),
    "massive-dyn": Client("GB", 0.5, {"/v1/vision": 1.0}, 900, 100),
    "gringotts": Client("GB", 0.4, {"/v1/chat": 1.0}, 350, 250),
}
COUNTRIES = tuple(sorted({client.country for client in CLIENTS.values()}))
# Clients that sign up during any window: a couple, from usual countries (ordinary churn).
CHURN = {"new-us-01": "US", "new-de-01": "DE"}
NEW_CLIENT_RATE = 0.8  # requests per second of each client of a wave
# Countries a wave of new clients may come from (none of them usual).
WAVE_COUNTRIES = ("VN", "NG", "RO")
WEEKLY_PEAK = 1.5  # the onset's weekday against the other days


def _weekly(fleet: Fleet) -> np.ndarray:
    """1.5 on the onset's weekday, 1 on the others, and each day a little different."""
    times = fleet.grid.times
    days = np.floor((times - fleet.grid.onset) / 86400 + 0.5).astype(int)  # 0 today, -7 ...
    weekday = datetime.fromtimestamp(fleet.grid.onset, UTC).weekday()
    peak = np.array([datetime.fromtimestamp(t, UTC).weekday() == weekday for t in times])
    level = {d: fleet.grid.rng("day", str(d)).lognormal(0.0, 0.04) for d in set(days)}
    return np.where(peak, WEEKLY_PEAK, 1.0) * np.array([level[d] for d in days])


def _new_clients(fleet: Fleet) -> dict[str, tuple[str, float]]:
    """client -> (country, when it first called): the churn and any planted wave."""
    onset = fleet.grid.onset
    found = {
        client: (country, onset - 3600 + 1500 * k)
        for k, (client, country) in enumerate(CHURN.items())
    }
    for country in WAVE_COUNTRIES:
        count = int(fleet.offset(("new_clients", country)).max())
        for k in range(count):
            found[f"new-{country.lower()}-{k + 2:02d}"] = (country, onset + 90 * k)
    return found


def client_rates(fleet: Fleet) -> dict[tuple[str, str, str], np.ndarray]:
    """(client, country, route) -> requests per second: the usual clients and the new ones."""
    grid = fleet.grid
    weekly = _weekly(fleet)
    rates = {}
    for name, client in CLIENTS.items():
        for route, share in client.routes.items():
            noise = grid.noise(0.05, "client", name, route)
            rate = client.requests_per_second * share * grid.traffic * weekly * noise
            rates[name, client.country, route] = rate * fleet.factor(("client", name, route))
    for name, (country, since) in _new_clients(fleet).items():
        noise = grid.noise(0.1, "client", name)
        rate = NEW_CLIENT_RATE * noise * grid.since(since)
        rates[name, country, "/v1/chat"] = rate
    # A route that stopped being called loses every client's requests on it.
    return {key: rate * fleet.factor(("route", key[2])) for key, rate in rates.items()}


def _by_client(fleet: Fleet) -> list[Group]:
    groups = []
    first = fleet.grid.first - 86400
    for (name, country, route), rate in client_rates(fleet).items():
        seen = np.maximum.accumulate(rate > 0)  # a client's series exists from its first call
        groups.append(
            fleet.single(
                "http_requests_by_client_total",
                ints(fleet.grid.counter(rate, first)),
                seen,
                client_id=name,
                country=country,
                route=route,
            )
        )
    return groups


def _tokens(fleet: Fleet) -> list[Group]:
    per_client: dict[str, np.ndarray] = {}
    countries: dict[str, str] = {}
    for (name, country, _), rate in client_rates(fleet).items():
        per_client[name] = per_client.get(name, 0) + rate
        countries[name] = country
    groups = []
    first = fleet.grid.first - 86400
    for name, rate in per_client.items():
        client = CLIENTS.get(name, Client(countries[name], 0.0, {}, 500, 200))
        seen = np.maximum.accumulate(rate > 0)
        for direction, per_request in (
            ("input", client.input_tokens),
            ("output", client.output_tokens),
        ):
            tokens = rate * per_request * fleet.grid.noise(0.04, "tokens", name, direction)
            tokens *= fleet.factor(("tokens", name, direction))
            groups.append(
                fleet.single(
                    "llm_tokens_total",
                    ints(fleet.grid.counter(tokens, first)),
                    seen,
                    client_id=name,
                    direction=direction,
                )
            )
    return groups


def _requests(fleet: Fleet) -> list[Group]:
    """http_requests_total per instance: the clients' traffic spread over the fleet."""
    by_route: dict[str, np.ndarray] = {}
    for (_, _, route), rate in client_rates(fleet).items():
        by_route[route] = by_route.get(route, 0) + rate
    groups = []
    for instance in INSTANCES:
        for route in ROUTES:
            rate = by_route.get(route, np.zeros(fleet.grid.times.size)) / len(INSTANCES)
            rate = rate * fleet.grid.noise(0.03, "instance", instance, route)
            # Errors are another runbook's (high-error-rate): one code keeps the file small.
            groups.append(
                fleet.single(
                    "http_requests_total",
                    ints(fleet.counter(rate, instance)),
                    instance=instance,
                    route=route,
                    code="200",
                )
            )
    return groups


BY_CLIENT = Family(
    "http_requests_by_client", "counter", "Requests by client, country and route.", _by_client
)
TOKENS = Family("llm_tokens", "counter", "LLM tokens by client and direction.", _tokens)
REQUESTS = Family("http_requests", "counter", "HTTP requests by route and status code.", _requests)
FAMILIES = (BY_CLIENT, TOKENS, REQUESTS, BUILD_INFO)


def _ramp(fleet: Fleet, value: float, minutes: float) -> np.ndarray:
    """1 until onset, then `value` reached linearly over `minutes`."""
    progress = np.clip(fleet.grid.hours_after * 60 / minutes, 0.0, 1.0)
    return np.where(fleet.grid.after, 1 + (value - 1) * progress, 1.0)


def _flood(fleet: Fleet) -> None:
    s = fleet.scenario
    client = s.affected["client_id"]
    for route in CLIENTS[client].routes:
        fleet.scale(("client", client, route), fleet.after_onset(s.magnitude))


def _new_country(fleet: Fleet) -> None:
    s = fleet.scenario
    fleet.shift(("new_clients", s.affected["country"]), float(s.magnitude))


def _prompt_stuffing(fleet: Fleet) -> None:
    s = fleet.scenario
    fleet.scale(("tokens", s.affected["client_id"], "input"), _ramp(fleet, s.magnitude, 15))


def _route_drop(fleet: Fleet) -> None:
    s = fleet.scenario
    fleet.scale(("route", s.affected["route"]), fleet.after_onset(s.magnitude))
    # A deploy of the service four minutes before, on half the fleet: close, and innocent.
    deployed = [i for i in s.affected["deployed"].split(",") if i]
    if deployed:
        fleet.deploy(deployed, NEW_BUILD, minutes_from_onset=-4, restart=False)


CAUSES = (
    Cause(
        name="flood",
        summary="one small client multiplies its request rate at onset",
        affected={"client_id": "stark-labs"},
        magnitude=6.0,
        plant=_flood,
    ),
    Cause(
        name="new_country",
        summary="clients never seen before, all from one country, start calling at onset",
        affected={"country": "VN"},
        magnitude=12,  # how many new clients
        plant=_new_country,
    ),
    Cause(
        name="prompt_stuffing",
        summary="one client's input tokens per request multiply; its request rate stays flat",
        affected={"client_id": "umbrella"},
        magnitude=8.0,
        plant=_prompt_stuffing,
    ),
    Cause(
        name="route_drop",
        summary="one route loses most of its traffic (callers stopped); an innocent deploy",
        affected={"route": "/v1/vision", "deployed": "api-0,api-1"},
        magnitude=0.15,  # what is left of the route's traffic
        plant=_route_drop,
    ),
    Cause(
        name="none",
        summary="a weekly peak, as last week",
        affected={},
        magnitude=1.0,
        plant=lambda _: None,
    ),
)
LABELS = {"client_id": tuple(CLIENTS), "country": WAVE_COUNTRIES, "deployed": (*INSTANCES, "")}

DEMO = Case(id="demo", cause="flood", seed=7, expect={"client_id": "stark-labs"})

CASES = (
    Case(id="at-flood", cause="flood", seed=31, expect={"client_id": "stark-labs"}),
    Case(
        id="at-flood-tyrell",
        cause="flood",
        seed=32,
        magnitude=3.0,
        affected={"client_id": "tyrell"},
        expect={"client_id": "tyrell"},
    ),
    # Not even in last week's top 10 clients: its baseline is bounded by the smallest of them.
    Case(
        id="at-flood-tail",
        cause="flood",
        seed=37,
        magnitude=25.0,
        affected={"client_id": "oscorp"},
        expect={"client_id": "oscorp"},
    ),
    Case(id="at-new-country", cause="new_country", seed=33, expect={"country": "VN"}),
    Case(
        id="at-prompt-stuffing", cause="prompt_stuffing", seed=34, expect={"client_id": "umbrella"}
    ),
    Case(
        id="at-route-drop",
        cause="route_drop",
        seed=35,
        expect={"route": "/v1/vision"},
        not_named={"version": NEW_BUILD},
    ),
    Case(id="at-quiet", cause="none", seed=36, expect={}),
)
