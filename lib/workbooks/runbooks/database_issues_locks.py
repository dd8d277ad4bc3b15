"""database-issues: lock pile-ups, deadlocks, the service's deploys and replication lag.

``pg_locks_count`` counts waiting locks with granted ones, so a pile-up is read from three
things together, per database: more locks than its baseline, more ``active`` sessions (a session
waiting on a lock is active), and a long open transaction holding them. Locks that rose with
idle sessions alone are held, not waited on.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.database_issues_data import (
    THRESHOLDS,
    blocking_sql,
    compare_table,
    instance_of,
    last_values,
    result_table,
    since,
    stale,
)

# A deploy of the service this close before the alert is a suspect worth a look.
DEPLOY_NEAR = timedelta(minutes=20)


def _by_database(table: pd.DataFrame, by: str) -> dict[str, tuple[float, float]]:
    return {
        str(row[by]): (float(row["current"]), float(row["baseline"])) for _, row in table.iterrows()
    }


def _grown(pair: tuple[float, float]) -> float:
    current, baseline = pair
    if math.isnan(current):
        return 0.0
    return current - (0.0 if math.isnan(baseline) else baseline)


def locks(
    incident: Incident,
    by_database: QueryResult,
    by_mode: QueryResult,
    sessions: QueryResult,
    oldest: QueryResult,
) -> None:
    """A lock pile-up behind a long transaction, by database; the chart of locks by mode."""
    if not by_mode.empty:
        incident.timeseries(by_mode, by="mode", max_series=6)
    if by_database.empty or sessions.empty:
        return
    if stale(incident, by_database):
        steps.checked(incident, "locks: no data since the database stopped reporting")
        return
    limits = THRESHOLDS.of(incident)
    lock_growth = _by_database(result_table(incident, by_database, by="datname"), "datname")
    active = sessions.current[sessions.current["state"] == "active"]
    active_base = sessions.baseline
    if active_base is not None and not active_base.empty:
        active_base = active_base[active_base["state"] == "active"]
    active_growth = _by_database(
        compare_table(incident, active, active_base, by="datname"), "datname"
    )
    ages = _oldest_by_database(oldest)
    floor = limits["waiting_sessions_warning"]
    piled, held = [], []
    for datname, pair in lock_growth.items():
        waiting = min(_grown(pair), _grown(active_growth.get(datname, (math.nan, math.nan))))
        if waiting >= floor:
            piled.append((datname, waiting, pair))
        elif _grown(pair) >= floor:
            held.append(f"{datname} ({pair[1]:.0f} → {pair[0]:.0f})")
    if not piled:
        _no_pileup(incident, by_database, held)
        return
    for datname, waiting, pair in sorted(piled, key=lambda item: -item[1]):
        incident.record(_pileup_finding(incident, by_database, datname, waiting, pair, ages))


def _no_pileup(incident: Incident, by_database: QueryResult, held: list[str]) -> None:
    more = (
        f"locks rose in {', '.join(held)} without more active sessions: held by idle "
        "sessions, not waited on"
        if held
        else "locks are at their baseline in every database"
    )
    steps.checked(incident, f"locks: no pile-up ({more})")
    incident.record(
        Finding(
            severity="info",
            title=f"No lock pile-up: {more}",
            subject={"instance": instance_of(incident)},
            metric=by_database.name,
        )
    )


def _oldest_by_database(oldest: QueryResult) -> dict[str, tuple[float, str]]:
    """datname -> (age in seconds, state) of its oldest open transaction now."""
    found: dict[str, tuple[float, str]] = {}
    for key, age in last_values(oldest, ["datname", "state"]).items():
        datname, _, state = key.partition(" / ")
        if age > found.get(datname, (-1.0, ""))[0]:
            found[datname] = (age, state)
    return found


def _pileup_finding(
    incident: Incident,
    by_database: QueryResult,
    datname: str,
    waiting: float,
    pair: tuple[float, float],
    ages: dict[str, tuple[float, str]],
) -> Finding:
    limits = THRESHOLDS.of(incident)
    age, state = ages.get(datname, (0.0, ""))
    long_enough = age >= limits["transaction_age_seconds_warning"]
    current, baseline = pair
    numbers = f"locks {baseline:.0f} → {current:.0f}, about {waiting:.0f} more active sessions"
    if not long_enough:
        return Finding(
            severity="warning",
            title=(
                f"More locks and active sessions in {datname} ({numbers}), but no long "
                f"transaction (oldest {age:.0f} s): heavy load rather than a blocked queue"
            ),
            subject={"datname": datname},
            metric=by_database.name,
            observed=current,
            baseline=baseline,
            unit="locks",
        )
    # The long transaction is half of the cause: the pile-up is as severe as the worse of the
    # queue and the transaction's age (a small queue behind a 40-minute transaction is critical).
    queue = limits.severity(waiting, "waiting_sessions")
    held = limits.severity(age, "transaction_age_seconds")
    severity = "critical" if "critical" in (queue, held) else "warning"
    return Finding(
        severity=severity,
        title=(
            f"Sessions pile up behind a long transaction in {datname}: {numbers} against the "
            f"baseline, while a transaction has been open {age / 60:.0f} min ('{state}')"
        ),
        detail=(
            "pg_locks_count counts waiting locks with granted ones; the pile-up is read from "
            "locks and active (waiting) sessions rising together beside the oldest transaction."
        ),
        subject={"datname": datname},
        metric=by_database.name,
        observed=current,
        baseline=baseline,
        unit="locks",
        recommendation=(
            f"Find the blocking session: `{blocking_sql(datname)}` then end it with "
            "`SELECT pg_terminate_backend(<pid>);` (its transaction rolls back) and ask its "
            "owner why it stayed open."
        ),
        cause="instance",
    )


def deadlocks(incident: Incident, result: QueryResult) -> None:
    """Deadlocks per 5 minutes by database, against the baseline."""
    if result.empty:
        return
    incident.timeseries(result, by="datname", max_series=6)
    if stale(incident, result):
        steps.checked(incident, "deadlocks: no data since the database stopped reporting")
        return
    limits = THRESHOLDS.of(incident)
    table = result_table(incident, result, by="datname")
    hit = table[
        (
            table["current"].fillna(0) - table["baseline"].fillna(0)
            >= limits["deadlocks_per_5m_warning"]
        )
    ]
    if hit.empty:
        top = float(table["current"].max()) if len(table) else 0.0
        top = 0.0 if math.isnan(top) else top
        steps.checked(incident, f"deadlocks: none above the baseline ({top:.1f} per 5 min at most)")
        incident.record(
            Finding(
                severity="info",
                title=f"No deadlocks above the baseline ({top:.1f} per 5 min at most)",
                subject={"instance": instance_of(incident)},
                metric=result.name,
            )
        )
        return
    for _, row in hit.sort_values("current", ascending=False).iterrows():
        datname, current = str(row["datname"]), float(row["current"])
        base = 0.0 if math.isnan(row["baseline"]) else float(row["baseline"])
        incident.record(
            Finding(
                severity=limits.severity(current, "deadlocks_per_5m"),
                title=(
                    f"Deadlocks in {datname}: {current:.1f} per 5 min since "
                    f"{since(incident):%H:%M} UTC (baseline {base:.1f}); PostgreSQL aborts one "
                    "transaction of each"
                ),
                subject={"datname": datname},
                metric=result.name,
                observed=current,
                baseline=base,
                unit="per 5 min",
                recommendation=(
                    f'Read the deadlock reports in the PostgreSQL log ("deadlock detected", '
                    f"database {datname}): they name both statements. Make the application take "
                    "rows in one order, or retry the aborted transaction."
                ),
                cause="instance",
            )
        )


def client_deploys(incident: Incident, builds: QueryResult | None) -> None:
    """A deploy of the service that uses the database near the alert: a suspect, never proof.

    Database metrics cannot tie sessions to a build, so a deploy is never named as the cause
    here; a warning says where to check (application_name in pg_stat_activity).
    """
    if builds is None or builds.empty:
        steps.checked(incident, "deploys: no service build known for this database")
        return
    start = since(incident)
    found = steps.rollouts(builds.current, label="version", by="instance")
    if not found:
        steps.checked(incident, "deploys: no new build of the service in the window")
        return
    for rollout in found:
        at = rollout.at.tz_localize("UTC") if rollout.at.tzinfo is None else rollout.at
        minutes = (start - at).total_seconds() / 60
        near = -5 <= minutes <= DEPLOY_NEAR.total_seconds() / 60
        when = f"{abs(minutes):.0f} min {'before' if minutes >= 0 else 'after'} the alert"
        incident.record(
            Finding(
                severity="warning" if near else "info",
                title=(
                    f"Build {rollout.version} of {incident.service} reached "
                    f"{len(rollout.units)} instance(s) at {at:%H:%M} UTC, {when}; the database "
                    "metrics cannot tell whether its sessions are the ones above"
                ),
                subject={"version": rollout.version, "instance": list(rollout.units)},
                metric=builds.name,
                recommendation=(
                    "Check whether the sessions named above come from this build "
                    "(`SELECT application_name, client_addr, count(*) FROM pg_stat_activity "
                    f"GROUP BY 1, 2;`); if they do, roll {incident.service} back to its "
                    "previous build."
                )
                if near
                else None,
            )
        )


def wants_replication(incident: Incident) -> bool:
    """Whether to read replication lag: only for a replication alert, since postgres_exporter
    does not export it by default and a missing metric would be reported as missing data."""
    return "replication" in incident.alert_name.lower()


def replication(incident: Incident, lag: QueryResult | None) -> None:
    """Replication lag where it is exported, against its thresholds."""
    if lag is None:
        steps.checked(
            incident,
            "replication lag: not read (not a replication alert; postgres_exporter does not "
            "export it by default)",
        )
        return
    if lag.empty:
        return
    value = max(last_values(lag, "instance").values())
    grade = THRESHOLDS.of(incident).severity(value, "replication_lag_seconds")
    steps.checked(incident, f"replication lag: {value:.0f} s")
    instance = instance_of(incident)
    incident.record(
        Finding(
            severity=grade,
            title=f"Replication lag on {instance}: {value:.0f} s now",
            subject={"instance": instance},
            metric=lag.name,
            observed=value,
            unit="seconds",
            recommendation=(
                "Check the replica's disk and network, and long queries on it "
                "(`SELECT * FROM pg_stat_replication;` on the primary)."
            )
            if grade != "info"
            else None,
            cause="instance" if grade != "info" else None,
        )
    )
