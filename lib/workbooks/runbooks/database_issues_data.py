"""database-issues: the thresholds, the before/after tables and the SQL the findings recommend.

Shared by the runbook's step modules (:mod:`database_issues`, :mod:`database_issues_locks`).
A database alert carries the exporter's ``instance`` (no ``service``), and a database that was
just set up has no history a day back: each value is then compared with the same window before
the alert started, so the steps still judge a change rather than a size.
"""

from __future__ import annotations

import math

import pandas as pd

from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

RUNBOOK = "database-issues"
THRESHOLDS = steps.Thresholds(
    RUNBOOK,
    # Share of max_connections in use now.
    connections_share_critical=0.95,
    connections_share_warning=0.85,
    # Age of the oldest open transaction (seconds).
    transaction_age_seconds_critical=1800,
    transaction_age_seconds_warning=300,
    # Sessions queued behind locks: more active sessions and more locks than the baseline.
    waiting_sessions_critical=10,
    waiting_sessions_warning=3,
    # Deadlocks per 5 minutes in one database.
    deadlocks_per_5m_critical=5,
    deadlocks_per_5m_warning=1,
    # Replication lag, where it is exported (seconds).
    replication_lag_seconds_critical=300,
    replication_lag_seconds_warning=30,
    # A database and state that gained this many sessions moved; culprits stand this far
    # above the next one.
    moved_sessions=5,
    stands_out_gap=1.4,
)
IDLE_IN_TRANSACTION = "idle in transaction"
SESSION = "session"  # the column joining datname and state in the sessions breakdown


def instance_of(incident: Incident) -> str:
    """The database server the alert is about: the exporter's instance label."""
    return incident.labels.get("instance", "")


def since(incident: Incident) -> pd.Timestamp:
    return pd.Timestamp(incident.starts_at)


def has_baseline(result: QueryResult) -> bool:
    return result.baseline is not None and not result.baseline.empty


def compare_table(
    incident: Incident, frame: pd.DataFrame, baseline: pd.DataFrame | None, *, by: str
) -> pd.DataFrame:
    """``[by, current, baseline, ratio, delta]`` since the alert start, most grown first.

    Against the baseline window when there is one, else against the same window before the
    alert started (a new server, or Prometheus that kept no history).
    """
    start = since(incident)
    if baseline is not None and not baseline.empty:
        return analysis.top_contributors(frame, baseline, by=by, since=start)
    wide = analysis.to_wide(frame, by)
    after, before = wide[wide.index >= start], wide[wide.index < start]
    rows = []
    for name in wide.columns:
        current = float(after[name].median()) if after[name].notna().any() else math.nan
        earlier = float(before[name].median()) if before[name].notna().any() else math.nan
        ratio = current / earlier if earlier and math.isfinite(earlier) else math.nan
        rows.append((name, current, earlier, ratio, current - earlier))
    table = pd.DataFrame(rows, columns=[by, "current", "baseline", "ratio", "delta"])
    return table.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)


def result_table(incident: Incident, result: QueryResult, *, by: str) -> pd.DataFrame:
    """:func:`compare_table` of a query result."""
    return compare_table(incident, result.current, result.baseline, by=by)


def last_values(result: QueryResult, by: str | list[str]) -> dict[str, float]:
    """Each series' last value (label values joined by `` / `` when ``by`` is a list)."""
    if result.empty:
        return {}
    names = [by] if isinstance(by, str) else by
    frame = result.current.sort_values("timestamp")
    last = frame.groupby(names)["value"].last()
    return {
        (" / ".join(map(str, key)) if isinstance(key, tuple) else str(key)): float(value)
        for key, value in last.items()
    }


def last_time(result: QueryResult) -> pd.Timestamp | None:
    if result.empty:
        return None
    return pd.Timestamp(result.current["timestamp"].max())


def stale(incident: Incident, result: QueryResult) -> bool:
    """The series stopped reporting before the window's end (the database went away)."""
    last = last_time(result)
    if last is None:
        return True
    end = pd.Timestamp(incident.window.end).tz_localize(None)
    last = last.tz_localize(None) if last.tzinfo else last
    return last < end - pd.Timedelta(seconds=3 * max(incident.step_seconds, 60))


def quote(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def terminate_idle_sql(datname: str, state: str) -> str:
    """End the sessions left idle in a transaction for over 5 minutes in ``datname``."""
    return (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = {quote(datname)} AND state = {quote(state)} "
        "AND state_change < now() - interval '5 minutes';"
    )


def who_sql(datname: str, state: str) -> str:
    """Which application and client hold the sessions, oldest first."""
    return (
        "SELECT application_name, client_addr, count(*), min(xact_start) FROM pg_stat_activity "
        f"WHERE datname = {quote(datname)} AND state = {quote(state)} "
        "GROUP BY 1, 2 ORDER BY 3 DESC;"
    )


def blocking_sql(datname: str) -> str:
    """The sessions that block others in ``datname`` and how long their transactions run."""
    return (
        "SELECT pid, state, now() - xact_start AS age, application_name, left(query, 60) "
        "FROM pg_stat_activity WHERE pid IN (SELECT unnest(pg_blocking_pids(pid)) "
        f"FROM pg_stat_activity WHERE datname = {quote(datname)});"
    )
