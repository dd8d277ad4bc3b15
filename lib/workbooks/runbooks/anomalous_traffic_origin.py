"""anomalous-traffic, where the traffic comes from: the excess by client or country, and
clients never seen before, by country.

A wave of new clients has no baseline of its own, so it is counted instead: clients calling now
that made no request in the week before (the ``anomalous_traffic_new_clients_by_country``
query), by country. A few a day is ordinary churn; many from one country is not, however small
that country is next to the usual ones.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

NEW_CLIENTS = "anomalous_traffic_new_clients_by_country"


def _since(incident: Incident) -> pd.Timestamp:
    return pd.Timestamp(incident.starts_at)


def excess_chart(incident: Incident, result: QueryResult, *, by: str) -> None:
    """Who accounts for the excess: current minus last week, largest first (new values too)."""
    if result.empty:
        return
    table = analysis.top_contributors(
        result.current, result.baseline, by=by, since=_since(incident)
    )
    table["delta"] = table["current"] - table["baseline"].fillna(0.0)
    table = table.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)
    incident.show(
        charts.ranked_bars(
            table,
            label=by,
            value="delta",
            unit="req/s",
            title=incident.chart_title(f"Excess requests by {by} against last week"),
        )
    )


def countries(
    incident: Incident, by_country: QueryResult, new_clients: QueryResult, *, limits: steps.Limits
) -> None:
    """Traffic by country against last week, and clients never seen before, by country."""
    excess_chart(incident, by_country, by="country")
    table = new_client_table(new_clients, since=_since(incident))
    if table.empty:
        steps.checked(incident, "clients never seen before: none")
        return
    found = steps.classify(
        table, by="country", measure="delta", min_change=limits["new_clients_warning"], gap=2.0
    )
    total = int(table["current"].sum())
    if not found.culprits:
        most = int(table["current"].max())
        steps.checked(
            incident, f"clients never seen before: {total}, at most {most} from one country"
        )
        return
    incident.record(_new_country_finding(incident, by_country, found, total, limits))


def new_client_table(new_clients: QueryResult, *, since: pd.Timestamp) -> pd.DataFrame:
    """[country, current, baseline, ratio, delta]: the most new clients seen since ``since``."""
    frame = new_clients.current
    if frame.empty or "country" not in frame.columns:
        return pd.DataFrame(columns=["country", "current", "baseline", "ratio", "delta"])
    recent = pd.to_datetime(frame["timestamp"], utc=True) >= since
    frame = frame[frame["country"].notna() & recent]
    most = frame.groupby("country")["value"].max().sort_values(ascending=False)
    return pd.DataFrame(
        {
            "country": most.index.astype(str),
            "current": most.to_numpy(dtype=float),
            "baseline": 0.0,
            "ratio": math.nan,
            "delta": most.to_numpy(dtype=float),
        }
    )


def _new_country_finding(
    incident: Incident,
    by_country: QueryResult,
    found: steps.Breakdown,
    total: int,
    limits: steps.Limits,
) -> Finding:
    names = list(found.culprits)
    count = int(sum(found.row(name)["current"] for name in names))
    traffic = analysis.top_contributors(
        by_country.current, by_country.baseline, by="country", since=_since(incident)
    )
    rows = traffic[traffic["country"].astype(str).isin(names)]
    rate = float(rows["current"].sum())
    share = rate / float(traffic["current"].sum()) if len(traffic) else math.nan
    before = float(rows["baseline"].fillna(0.0).sum())
    last_week = "nothing" if before == 0 else format_value(before, "req/s")
    others = total - count
    severity = limits.severity(float(count), "new_clients")
    title = (
        f"{count} clients never seen in the week before call from {steps.join(names)} "
        f"({format_value(rate, 'req/s')}, {format_value(share, 'ratio')} of traffic; "
        f"{last_week} from there last week); {others} new from all other countries"
    )
    return Finding(
        severity=steps.as_severe_as_symptom(incident, severity, {"country": names}),
        title=title,
        subject={"country": names},
        metric=NEW_CLIENTS,
        observed=float(count),
        baseline=0.0,
        unit="clients",
        cause="security",
        recommendation=f"Review the new clients from {steps.join(names)} (sign-up source, "
        "keys issued, user agents). If it is abuse: challenge or block that traffic at the "
        "edge, revoke the new keys, and add a sign-up rate limit per country.",
    )


def recent_wave(
    new_clients: QueryResult, *, since: pd.Timestamp, limits: steps.Limits
) -> tuple[str, int] | None:
    """(country, new clients) when one country's new clients since ``since`` reach the warning."""
    table = new_client_table(new_clients, since=since)
    if table.empty or table["current"].iloc[0] < limits["new_clients_warning"]:
        return None
    return str(table["country"].iloc[0]), int(table["current"].iloc[0])


def wave_still_happening(
    incident: Incident, country: str, count: int, *, limits: steps.Limits, recent: timedelta
) -> None:
    """Section 2's verdict when the only thing going on is a wave of new clients."""
    finding = Finding(
        severity=limits.severity(float(count), "new_clients"),
        title=f"Still happening: {count} clients never seen before call from {country} over "
        f"the last {recent.total_seconds() / 60:.0f} min (everything else is within last week)",
        subject={"country": country},
        metric=NEW_CLIENTS,
        observed=float(count),
        baseline=0.0,
        unit="clients",
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=True, finding=finding)
    steps.checked(incident, f"still happening: yes ({count} new clients from {country})")
