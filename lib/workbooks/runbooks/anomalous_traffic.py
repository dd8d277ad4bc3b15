"""anomalous-traffic: how unusual is the traffic against last week, and who makes it so.

Traffic is weekly (a Monday peak is normal on Mondays), so the runbook's baseline is the same
window a week earlier (``metadata.workbooks.baseline = "7d"``), and the days between are read too
(:func:`days_between`). It tells apart one client flooding, a wave of clients never seen before
from one country, one client whose tokens per request multiplied at a flat request rate
(scraping or prompt stuffing), and a drop on one route; each against its own baseline, so the
biggest client or country is never blamed for its size. Cells of
``notebooks/anomalous-traffic.ipynb`` call these steps in order; a team overrides the thresholds
under ``runbooks: {anomalous-traffic: {thresholds: ...}}``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pandas as pd

from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import anomalous_traffic_origin as origin
from workbooks.runbooks import anomalous_traffic_week as week
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "anomalous-traffic",
    # Total requests against the same window last week, either way (a drop reads as 1/ratio).
    traffic_change_critical=2.5,
    traffic_change_warning=1.5,
    # One client's request rate against its own last week.
    client_change_critical=4.0,
    client_change_warning=2.0,
    # One client's tokens per request against its own last week.
    tokens_change_critical=4.0,
    tokens_change_warning=2.0,
    # A route's request rate, last week / now (4: three quarters of it are gone).
    route_drop_critical=4.0,
    route_drop_warning=2.0,
    # Clients never seen in the week before, from one country.
    new_clients_critical=10,
    new_clients_warning=5,
    # A value "moved" at this change; culprits stand this far above the next one.
    moved_ratio=1.5,
    stands_out_gap=1.4,
    # Within this of last week while this far from the days between: a weekly pattern.
    weekly_pattern_ratio=1.3,
)
RECENT = timedelta(minutes=10)


def _since(incident: Incident) -> pd.Timestamp:
    return pd.Timestamp(incident.starts_at)


def fill_missing_baseline(result: QueryResult, *, by: str) -> QueryResult:
    """``result`` with a baseline for every value of ``by`` that has none (a topk breakdown).

    A client in this window's top but not in last week's was below every client of last
    week's top, so the smallest of those (median) is an upper bound of its baseline: its ratio
    is then a lower bound, and a small client that floods into the top is still compared with
    something. Without a baseline at all the result is returned as is.
    """
    base = result.baseline
    if result.empty or base is None or base.empty or by not in base.columns:
        return result
    medians = base.groupby(by)["value"].median()
    missing = sorted(set(result.current[by].dropna().astype(str)) - set(medians.index.astype(str)))
    if not missing or not len(medians):
        return result
    times = base.loc[base[by] == medians.idxmin(), "timestamp"].to_numpy()
    floor = float(medians.min())
    filled = [pd.DataFrame({"timestamp": times, by: name, "value": floor}) for name in missing]
    return replace(result, baseline=pd.concat([base, *filled], ignore_index=True))


# --- 2. is it still happening -----------------------------------------------------------------


def still_happening(
    incident: Incident,
    rate: QueryResult,
    by_client: QueryResult,
    by_route: QueryResult,
    tokens_per_request: QueryResult,
    new_clients: QueryResult | None = None,
) -> steps.Recent | None:
    """The last 10 minutes: the worst of the total, a client, a route's drop, tokens per request.

    A wave of new clients has no baseline to compare with: when nothing else is off, it is
    still happening if one country's new clients reach ``new_clients_warning`` lately.
    """
    limits = THRESHOLDS.of(incident)
    candidates = [
        (by_client, "client_id", "up", "client_change", "request rate"),
        (by_route, "route", "down", "route_drop", "request rate"),
        (tokens_per_request, "client_id", "up", "tokens_change", "tokens per request"),
        (rate, None, _direction(rate, incident), "traffic_change", "request rate"),
    ]
    scored = [
        (_recent_change(incident, result, by, direction), result, by, direction, ladder, what)
        for result, by, direction, ladder, what in candidates
        if not result.empty and result.baseline is not None and not result.baseline.empty
    ]
    if not scored:
        return None
    # The worst against its own ladder's warning level, so clients and totals compare fairly.
    scored.sort(key=lambda item: -item[0] / limits[f"{item[4]}_warning"])
    change, result, by, direction, ladder, what = scored[0]
    since = pd.Timestamp(incident.window.end) - pd.Timedelta(RECENT)
    wave = (
        origin.recent_wave(new_clients, since=since, limits=limits)
        if new_clients is not None
        else None
    )
    if wave is not None and change < limits[f"{ladder}_warning"]:
        origin.wave_still_happening(incident, *wave, limits=limits, recent=RECENT)
        return None
    return steps.still_happening(
        incident,
        result,
        by=by,
        direction=direction,
        severity=limits.ladder(ladder),
        what=what,
        unit="tokens" if ladder == "tokens_change" else "req/s",
        recent=RECENT,
    )


def _direction(rate: QueryResult, incident: Incident) -> steps.Direction:
    ratio = rate.compare(since=_since(incident)).ratio if not rate.empty else None
    return "down" if ratio is not None and ratio < 1 else "up"


def _recent_change(
    incident: Incident, result: QueryResult, by: str | None, direction: steps.Direction
) -> float:
    if by is None:
        ratio = result.compare(tail=pd.Timedelta(RECENT)).ratio
        if not ratio:
            return 0.0
        return ratio if direction == "up" else 1.0 / ratio
    since = pd.Timestamp(incident.window.end) - pd.Timedelta(RECENT)
    table = analysis.top_contributors(result.current, result.baseline, by=by, since=since)
    changes = steps.change_column(table, measure="ratio", direction=direction).dropna()
    return float(changes.max()) if len(changes) else 0.0


# --- 3.1 against last week and the days between -------------------------------------------------

days_between = week.days_between


def against_last_week(
    incident: Incident, rate: QueryResult, days: dict[int, QueryResult]
) -> float | None:
    """Total requests against the same window last week and each day between; the ratio."""
    return week.against_last_week(incident, rate, days, limits=THRESHOLDS.of(incident))


# --- 3.2 clients ------------------------------------------------------------------------------


def clients(incident: Incident, by_client: QueryResult) -> steps.Breakdown | None:
    """Each client's request rate against its own last week: one client flooding."""
    limits = THRESHOLDS.of(incident)
    found = steps.breakdown(
        incident,
        by_client,
        by="client_id",
        severity=limits.ladder("client_change"),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what="request rate",
        unit="req/s",
        cause="traffic",
        recommendation="Throttle client {values} at the API gateway to {its} usual rate (a "
        "per-client rate limit), then ask {its} owner what changed; if a key looks abused, "
        "revoke it and issue a new one.",
    )
    origin.excess_chart(incident, by_client, by="client_id")
    return found


# --- 3.3 countries and clients never seen before --------------------------------------------


def countries(incident: Incident, by_country: QueryResult, new_clients: QueryResult) -> None:
    """Traffic by country against last week, and clients never seen before, by country."""
    origin.countries(incident, by_country, new_clients, limits=THRESHOLDS.of(incident))


# --- 3.4 tokens per request -----------------------------------------------------------------


def tokens(
    incident: Incident, tokens_per_request: QueryResult, by_client: QueryResult
) -> steps.Breakdown | None:
    """Each client's tokens per request against its own last week: scraping, prompt stuffing."""
    limits = THRESHOLDS.of(incident)
    found = steps.breakdown(
        incident,
        tokens_per_request,
        by="client_id",
        severity=limits.ladder("tokens_change"),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what="tokens per request",
        unit="tokens",
        record=False,
    )
    if found is None:
        return None
    if not found.culprits:
        steps.checked(incident, "tokens per request: no client stands out")
        return found
    made = steps.culprit_finding(
        incident,
        tokens_per_request,
        found,
        what="tokens per request",
        unit="tokens",
        severity=limits.ladder("tokens_change"),
        cause="security",
        recommendation="Cap the tokens per request of client {values} at the gateway (max "
        "input tokens), review {its} recent prompts for scraping or prompt stuffing, and "
        "revoke {its} key if it is not {its} owner calling.",
    )
    incident.record(replace(made, detail=_request_rate_detail(incident, by_client, found)))
    return found


def _request_rate_detail(incident: Incident, by_client: QueryResult, found: steps.Breakdown) -> str:
    if by_client.empty or by_client.baseline is None:
        return "the request rate by client was not available"
    table = analysis.top_contributors(
        by_client.current, by_client.baseline, by="client_id", since=_since(incident)
    )
    parts = []
    for name in found.culprits:
        row = table[table["client_id"].astype(str) == name]
        ratio = float(row["ratio"].iloc[0]) if len(row) else math.nan
        parts.append(f"{name}'s request rate is {steps.ratio_text(ratio)} its last week")
    return "; ".join(parts) + ": the same calls, each much bigger"


# --- 3.5 routes, and what changed -----------------------------------------------------------


def routes(incident: Incident, by_route: QueryResult) -> steps.Breakdown | None:
    """Each route's request rate against its own last week: a route that lost its callers."""
    limits = THRESHOLDS.of(incident)
    return steps.breakdown(
        incident,
        by_route,
        by="route",
        direction="down",
        severity=limits.ladder("route_drop"),
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what="request rate",
        unit="req/s",
        cause="external",
        recommendation="Find who stopped calling {values}: the clients that use {it} (their "
        "recent app releases), the upstream or gateway route in front of {it}; a client-side "
        "release that broke {it} is rolled back on their side.",
    )


def what_changed(
    incident: Incident, builds: QueryResult, by_instance: QueryResult, rate: QueryResult
) -> None:
    """Deploys of the service near the onset, and whether the traffic change follows them.

    Each instance's change is read the way the total moved (``rate``: up or down).
    """
    limits = THRESHOLDS.of(incident)
    direction = _direction(rate, incident)
    instances = steps.breakdown(
        incident,
        by_instance,
        by="instance",
        direction=direction,
        severity="info",
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        chart=False,
        record=False,
    )
    steps.correlate_rollouts(
        incident,
        builds,
        instances.changes() if instances is not None else {},
        onset=None,
        severity=limits.ladder("traffic_change"),
        label="version",
        min_change=limits["moved_ratio"],
        gap=limits["stands_out_gap"],
        what="the traffic change",
        unit="req/s",
    )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: traffic is in line with the same window last week, and no client, "
            "country, route or tokens per request stands out against its own last week. A peak "
            "against yesterday is the weekly pattern; the alert may compare with the wrong day."
        ),
        next_steps=[
            "Widen the window (`lookback='6h'`) and compare with two weeks ago (`baseline='14d'`).",
            "Look at the gateway's logs for the clients and user agents in the window.",
            "Check the services that call this one (an upstream batch job, a retry storm).",
        ],
    )
