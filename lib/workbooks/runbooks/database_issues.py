"""database-issues: is PostgreSQL up, who holds its connections, what waits, and why.

Cells of ``notebooks/database-issues.ipynb`` call these steps in order; each records findings.
The alert carries the exporter's ``instance`` (and sometimes ``datname``), no ``service``, so
every query selects by ``instance``. Thresholds are declared in
:data:`~workbooks.runbooks.database_issues_data.THRESHOLDS`; a team overrides them under
``runbooks: {database-issues: {thresholds: ...}}``. The lock, deadlock, deploy and replication
steps live in :mod:`workbooks.runbooks.database_issues_locks` and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.database_issues_data import (
    IDLE_IN_TRANSACTION,
    SESSION,
    THRESHOLDS,
    compare_table,
    instance_of,
    last_values,
    stale,
    terminate_idle_sql,
    who_sql,
)
from workbooks.runbooks.database_issues_locks import (
    client_deploys,
    deadlocks,
    locks,
    replication,
    wants_replication,
)

__all__ = [
    "THRESHOLDS",
    "availability",
    "client_deploys",
    "connections",
    "deadlocks",
    "locks",
    "replication",
    "resolution",
    "sessions",
    "transactions",
    "wants_replication",
]


def availability(incident: Incident, up: QueryResult) -> bool | None:
    """Immediate check: can the exporter reach the database (pg_up)? True when up now."""
    if up.empty:
        return None
    frame = up.current.sort_values("timestamp")
    instance = instance_of(incident) or str(frame["instance"].iloc[-1])
    down = frame[frame["value"] < 1]
    now_up = float(frame["value"].iloc[-1]) >= 1
    if down.empty:
        steps.checked(incident, f"database reachable: pg_up 1 all window long on {instance}")
        return True
    first = pd.Timestamp(down["timestamp"].min())
    title = (
        f"PostgreSQL {instance} is down: pg_up 0 since {first:%H:%M} UTC (the exporter "
        "answers, the database does not)"
        if not now_up
        else f"PostgreSQL {instance} was down (pg_up 0 from {first:%H:%M} UTC) and is back"
    )
    finding = Finding(
        severity="critical" if not now_up else "warning",
        title=title,
        subject={"instance": instance},
        metric=up.name,
        observed=float(frame["value"].iloc[-1]),
        baseline=1.0,
        recommendation=(
            f"Check the server behind {instance}: `pg_isready -h HOST -p PORT`, the PostgreSQL "
            "log (out of disk, crash, OOM kill), then restart it (`pg_ctlcluster 15 main "
            "restart`) or fail over to the replica (`patronictl failover`)."
        ),
        cause="instance",
    )
    incident.record(finding)
    steps.symptom(incident, ongoing=not now_up, finding=finding)
    steps.checked(incident, f"database reachable: {'no' if not now_up else 'yes, again'}")
    return now_up


def connections(
    incident: Incident, used: QueryResult, by_state: QueryResult, maximum: QueryResult
) -> None:
    """Immediate check and chart: connections in use against max_connections, by state."""
    limit = next(iter(last_values(maximum, "instance").values()), None)
    if not by_state.empty:
        incident.show(
            charts.timeseries(
                by_state.current,
                baseline=by_state.baseline,
                by="state",
                title=incident.chart_title("Sessions by state (dashed: baseline)"),
                unit="count",
                alert_start=pd.Timestamp(incident.starts_at),
                limit=limit,
                limit_label="max_connections",
            )
        )
    if used.empty:
        return
    share = next(iter(last_values(used, "instance").values()))
    table = compare_table(incident, used.current, used.baseline, by="instance")
    before = float(table["baseline"].iloc[0]) if len(table) else None
    gone = stale(incident, used)
    grade = "info" if gone else THRESHOLDS.of(incident).severity(share, "connections_share")
    of = f" ({share * limit:.0f} of {limit:.0f})" if limit else ""
    usual = f"; baseline {format_value(before, 'ratio')}" if _number(before) else ""
    if gone:
        title = f"Connections: no data since the database stopped reporting ({share:.0%} then)"
    elif grade == "info":
        title = f"Not happening now: {share:.0%} of max_connections in use{of}{usual}"
    else:
        title = f"Still happening: {share:.0%} of max_connections in use now{of}{usual}"
    finding = Finding(
        severity=grade,
        title=title,
        subject={"instance": instance_of(incident)},
        metric=used.name,
        observed=share,
        baseline=before,
        unit="ratio",
        recommendation="Free connections: see which database and state hold them (3.2)."
        if grade != "info"
        else None,
    )
    incident.record(finding)
    if steps.trail(incident).ongoing is None:
        steps.symptom(incident, ongoing=grade != "info", finding=finding)
    steps.checked(incident, f"connections in use: {share:.0%} of max_connections{of}")


def _number(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def sessions(incident: Incident, result: QueryResult) -> steps.Breakdown | None:
    """Which database and state gained sessions against its own baseline; names idle ones."""
    if result.empty:
        return None
    thresholds = THRESHOLDS.of(incident)
    keyed = _keyed(result.current)
    table = compare_table(incident, keyed, _keyed(result.baseline), by=SESSION)
    found = steps.classify(
        table,
        by=SESSION,
        measure="delta",
        min_change=thresholds["moved_sessions"],
        gap=thresholds["stands_out_gap"],
    )
    bars = found.table.assign(gained=found.table["delta"])
    incident.show(
        charts.ranked_bars(
            bars,
            label=SESSION,
            value="gained",
            unit="sessions",
            title=incident.chart_title("Sessions gained by database / state against baseline"),
            highlight=found.culprits[0] if found.culprits else None,
        )
    )
    if not found.culprits:
        largest = f"{found.change:+.0f}" if found.change is not None else "none"
        steps.checked(incident, f"sessions by database and state: none stands out ({largest})")
        return found
    share = _connection_share(incident)
    for culprit in found.culprits:
        incident.record(_session_finding(incident, result, found.row(culprit), share))
    return found


def _keyed(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return frame
    key = frame["datname"].astype(str) + " / " + frame["state"].astype(str)
    return frame.assign(**{SESSION: key}).drop(columns=["datname", "state"])


def _connection_share(incident: Incident) -> str:
    symptom = steps.trail(incident).symptom
    return symptom.severity if symptom is not None and symptom.metric else "info"


def _session_finding(
    incident: Incident, result: QueryResult, row: pd.Series, share_grade: str
) -> Finding:
    datname, _, state = str(row[SESSION]).partition(" / ")
    gained = float(row["current"]) - float(row["baseline"])
    numbers = f"{row['baseline']:.0f} → {row['current']:.0f}"
    if state.startswith(IDLE_IN_TRANSACTION):
        severity = share_grade if share_grade != "info" else "warning"
        return Finding(
            severity=severity,  # type: ignore[arg-type]
            title=(
                f"Sessions left '{state}' in {datname} hold the connections: {gained:+.0f} "
                f"against their baseline ({numbers}); they do nothing and keep their locks"
            ),
            subject={"datname": datname, "state": state},
            metric=result.name,
            observed=float(row["current"]),
            baseline=float(row["baseline"]),
            unit="sessions",
            recommendation=(
                f"End them: `{terminate_idle_sql(datname, state)}` Find who leaves them "
                f"open: `{who_sql(datname, state)}` and set "
                f"`ALTER DATABASE {datname} SET idle_in_transaction_session_timeout = '5min';`"
            ),
            cause="limit",
        )
    return Finding(
        severity="warning",
        title=(
            f"{gained:+.0f} '{state}' sessions in {datname} against their baseline ({numbers}):"
            " queries run longer or wait (see the locks below)"
        ),
        subject={"datname": datname, "state": state},
        metric=result.name,
        observed=float(row["current"]),
        baseline=float(row["baseline"]),
        unit="sessions",
    )


def transactions(incident: Incident, oldest: QueryResult) -> None:
    """The longest open transaction, by database and state, against its age thresholds."""
    if oldest.empty:
        return
    incident.timeseries(oldest, by=["datname", "state"], max_series=6)
    if stale(incident, oldest):
        steps.checked(incident, "oldest transaction: no data since the database stopped reporting")
        return
    ages = last_values(oldest, ["datname", "state"])
    key = max(ages, key=ages.__getitem__)
    age = ages[key]
    datname, _, state = key.partition(" / ")
    grade = THRESHOLDS.of(incident).severity(age, "transaction_age_seconds")
    steps.checked(incident, f"oldest transaction: {_age(age)} in {datname} ({state})")
    explained = any(
        f.cause is not None and datname in f.subject_values("datname") for f in incident.findings
    )
    finding = Finding(
        severity=grade,
        title=f"The oldest open transaction is {_age(age)} old, in {datname} ('{state}')"
        + (" (explained by the cause above)" if explained and grade != "info" else ""),
        subject={"datname": datname, "state": state},
        metric=oldest.name,
        observed=age,
        unit="seconds",
        recommendation=f"See what it is: `{who_sql(datname, state)}`" if grade != "info" else None,
    )
    if explained and finding.severity == "critical":
        finding = replace(finding, severity="warning")
    incident.record(finding)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=(
            "A quiet run: PostgreSQL answers, connections in use are within their thresholds and "
            "no database or state gained sessions against its baseline, no locks pile up, no "
            "transaction is old and no deadlocks were counted. The alert may be too sensitive."
        ),
        next_steps=[
            "Look at pg_stat_activity by hand: `SELECT datname, state, wait_event_type, count(*) "
            "FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC;`.",
            "Widen the window (`lookback='6h'`) and compare with last week (`baseline='7d'`).",
            "Check the PostgreSQL log for errors (out of disk, checkpoints, autovacuum).",
        ],
    )
