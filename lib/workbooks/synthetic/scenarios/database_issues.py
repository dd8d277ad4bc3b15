"""database-issues: a PostgreSQL behind the service, as Debian's postgres_exporter reports it.

One database server per case (instance ``<service>-postgres:9187``, the exporter's; its series
carry ``server`` and no ``service``), five databases, every state and lock mode reported with
zeros included, counters without ``_total`` (docs/metrics.md). ``inference`` always holds the
most sessions, so a workbook must look at what changed, not at what is largest.

Causes: sessions left ``idle in transaction`` fill the connections (a step, in a small
database); a lock pile-up behind a long transaction (waiters ramp up, the holder sits idle in
its transaction); the database down (``pg_up`` 0, every other series gone); deadlocks (a small
steady rate); idle transactions while the service deploys a new build that is not the cause.
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO
from workbooks.synthetic.scenarios.fleet import INSTANCES, NEW_BUILD, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, fixed, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "database-issues"

ALERT = AlertRule(
    alertname="PostgresqlTooManyConnections",
    severity="warning",
    expr="sum by (instance) (pg_stat_activity_count) / on(instance) "
    "pg_settings_max_connections > 0.8",
    summary="PostgreSQL behind {service} is short of connections",
    description="More than 80% of max_connections are in use, or the database misbehaves.",
    labels={"instance": "{service}-postgres:9187"},
)

SERVER = "10.20.0.5:5432"
MAX_CONNECTIONS = 120
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
MODES = (
    "accessexclusivelock",
    "accesssharelock",
    "exclusivelock",
    "rowexclusivelock",
    "rowsharelock",
    "sharelock",
    "sharerowexclusivelock",
    "shareupdateexclusivelock",
    "sireadlock",
)
# Sessions per database and state at the daily mean; active ones follow traffic.
SESSIONS = {
    "postgres": {"active": 1.0, "idle": 1.0},
    "inference": {"active": 14.0, "idle": 30.0, "idle in transaction": 1.5},
    "orders": {"active": 5.0, "idle": 12.0, "idle in transaction": 1.0},
    "billing": {"active": 2.0, "idle": 6.0, "idle in transaction": 0.3},
    "analytics": {"active": 1.5, "idle": 5.0, "idle in transaction": 0.2},
}
DATABASES = tuple(SESSIONS)
# Locks each session in a state holds on average (reads: access share; writes: row exclusive).
LOCKS_PER_SESSION = {"accesssharelock": 1.5, "rowexclusivelock": 0.4}


def instance_of(service: str) -> str:
    """The exporter's instance for the database behind `service` (the alert carries it)."""
    return f"{service}-postgres:9187"


def _prefix(fleet: Fleet, name: str, **labels: str) -> str:
    pairs = {"instance": instance_of(fleet.service), "job": "postgres", **labels}
    return name + "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}"


def _reachable(fleet: Fleet) -> np.ndarray:
    """While the exporter can reach the database (every pg_* series but pg_up needs it)."""
    return fleet.factor(("up",)) > 0


def _sessions(fleet: Fleet, database: str, state: str) -> np.ndarray:
    mean = SESSIONS[database].get(state, 0.0)
    load = fleet.grid.traffic if state == "active" else 1.0
    noise = fleet.grid.noise(0.06, "sessions", database, state)
    value = mean * load * noise + fleet.offset(("sessions", database, state))
    return np.floor(value + 0.5)


def _up(fleet: Fleet) -> list[Group]:
    up = fleet.factor(("up",))
    return [fleet.group({_prefix(fleet, "pg_up"): ints(up)})]


def _max_connections(fleet: Fleet) -> list[Group]:
    values = [str(MAX_CONNECTIONS)] * fleet.grid.times.size
    name = _prefix(fleet, "pg_settings_max_connections", server=SERVER)
    return [fleet.group({name: values}, _reachable(fleet))]


def _activity(fleet: Fleet) -> list[Group]:
    counts = {(d, s): _sessions(fleet, d, s) for d in DATABASES for s in STATES}
    # The server refuses clients at max_connections: the application's pool of idle sessions
    # (the largest) is what gets refused first.
    over = np.maximum(sum(counts.values()) - MAX_CONNECTIONS, 0)
    counts["inference", "idle"] = counts["inference", "idle"] - over
    series = {}
    for (database, state), values in counts.items():
        labels = {"datname": database, "state": state, "server": SERVER}
        series[_prefix(fleet, "pg_stat_activity_count", **labels)] = ints(values)
    return [fleet.group(series, _reachable(fleet))]


def _tx_age(fleet: Fleet, database: str, state: str) -> np.ndarray:
    count = _sessions(fleet, database, state)
    typical = {"active": 0.4, "idle in transaction": 1.5}.get(state, 0.0)
    age = typical * fleet.grid.noise(0.5, "tx_age", database, state)
    age = np.where(count > 0, age, 0.0)
    return np.maximum(age, fleet.offset(("tx_age", database, state)))


def _max_tx_duration(fleet: Fleet) -> list[Group]:
    series = {}
    for database in DATABASES:
        for state in STATES:
            labels = {"datname": database, "state": state, "server": SERVER}
            name = _prefix(fleet, "pg_stat_activity_max_tx_duration", **labels)
            series[name] = fixed(_tx_age(fleet, database, state), 3)
    return [fleet.group(series, _reachable(fleet))]


def _locks(fleet: Fleet) -> list[Group]:
    series = {}
    for database in DATABASES:
        sessions = sum(_sessions(fleet, database, s) for s in ("active", "idle in transaction"))
        for mode in MODES:
            held = LOCKS_PER_SESSION.get(mode, 0.0) * sessions
            held = held * fleet.grid.noise(0.1, "locks", database, mode)
            value = np.floor(held + 0.5) + fleet.offset(("locks", database, mode))
            labels = {"datname": database, "mode": mode, "server": SERVER}
            series[_prefix(fleet, "pg_locks_count", **labels)] = ints(value)
    return [fleet.group(series, _reachable(fleet))]


def _deadlocks(fleet: Fleet) -> list[Group]:
    series = {}
    for number, database in enumerate(DATABASES):
        # A counter since the server started (no _total, as the exporter names it).
        per_second = fleet.offset(("deadlocks", database))
        total = fleet.grid.counter(per_second, fleet.grid.first - 86400) + 3 * number
        labels = {"datid": str(16384 + number), "datname": database, "server": SERVER}
        series[_prefix(fleet, "pg_stat_database_deadlocks", **labels)] = ints(total)
    return [fleet.group(series, _reachable(fleet))]


UP = Family("pg_up", "gauge", "Whether the last scrape could reach PostgreSQL.", _up)
MAX_CONNECTIONS_FAMILY = Family(
    "pg_settings_max_connections", "gauge", "Server setting max_connections.", _max_connections
)
ACTIVITY = Family("pg_stat_activity_count", "gauge", "Sessions by database and state.", _activity)
MAX_TX = Family(
    "pg_stat_activity_max_tx_duration",
    "gauge",
    "Age in seconds of the oldest transaction by database and state.",
    _max_tx_duration,
)
LOCKS = Family("pg_locks_count", "gauge", "Locks by database and mode.", _locks)
# A counter without _total, as the real exporter names it (promtool accepts it).
DEADLOCKS = Family(
    "pg_stat_database_deadlocks", "counter", "Deadlocks detected in this database.", _deadlocks
)
FAMILIES = (UP, MAX_CONNECTIONS_FAMILY, ACTIVITY, MAX_TX, LOCKS, DEADLOCKS, BUILD_INFO)


def _since_onset_seconds(fleet: Fleet, lead: float = 0.0) -> np.ndarray:
    return np.where(fleet.grid.after, fleet.grid.hours_after * 3600 + lead, 0.0)


def _idle_in_transaction(fleet: Fleet) -> None:
    # `magnitude` sessions open a transaction at onset and never finish it; each keeps the
    # access share locks of what it read, and the oldest grows as old as the leak.
    s = fleet.scenario
    database = s.affected["datname"]
    leaked = fleet.after_onset(s.magnitude, 0.0)
    fleet.shift(("sessions", database, "idle in transaction"), leaked)
    fleet.shift(("locks", database, "accesssharelock"), 2 * leaked)
    fleet.shift(("tx_age", database, "idle in transaction"), _since_onset_seconds(fleet, 5))


def _lock_pileup(fleet: Fleet) -> None:
    # One session takes an exclusive lock and sits idle in its transaction from a minute before
    # onset; from onset, sessions needing the table queue behind it (active, waiting), up to
    # `magnitude` of them after ten minutes.
    s = fleet.scenario
    database = s.affected["datname"]
    minutes = fleet.grid.hours_after * 60
    waiting = np.where(fleet.grid.after, np.floor(s.magnitude * np.minimum(minutes / 10, 1)), 0)
    fleet.shift(("sessions", database, "active"), waiting)
    fleet.shift(("sessions", database, "idle in transaction"), fleet.after_onset(1.0, 0.0))
    fleet.shift(("locks", database, "accessexclusivelock"), fleet.after_onset(1.0, 0.0))
    fleet.shift(("locks", database, "accesssharelock"), waiting)
    fleet.shift(("tx_age", database, "idle in transaction"), _since_onset_seconds(fleet, 60))
    fleet.shift(("tx_age", database, "active"), _since_onset_seconds(fleet))


def _down(fleet: Fleet) -> None:
    fleet.scale(("up",), fleet.after_onset(0.0))


def _deadlocks_cause(fleet: Fleet) -> None:
    s = fleet.scenario
    fleet.shift(("deadlocks", s.affected["datname"]), fleet.after_onset(s.magnitude / 60, 0.0))


def _idle_during_deploy(fleet: Fleet) -> None:
    # The service deploys a new build six minutes before the leak begins in another team's
    # database; the build is not what leaks (the sessions are in a database it does not use).
    fleet.deploy(INSTANCES, NEW_BUILD, minutes_from_onset=-6)
    _idle_in_transaction(fleet)


CAUSES = (
    Cause(
        name="idle_in_transaction",
        summary="sessions left idle in a transaction fill the connections (sessions)",
        affected={"datname": "billing"},
        magnitude=26.0,
        plant=_idle_in_transaction,
    ),
    Cause(
        name="lock_pileup",
        summary="sessions queue behind a long transaction's exclusive lock (waiting sessions)",
        affected={"datname": "inference"},
        magnitude=20.0,
        plant=_lock_pileup,
    ),
    Cause(
        name="down",
        summary="the database stops answering (pg_up 0)",
        affected={},
        magnitude=1.0,
        plant=_down,
    ),
    Cause(
        name="deadlocks",
        summary="transactions deadlock in one database (deadlocks per minute)",
        affected={"datname": "orders"},
        magnitude=0.6,
        plant=_deadlocks_cause,
    ),
    Cause(
        name="idle_during_deploy",
        summary="idle transactions while the service deploys a build that is not the cause",
        affected={"datname": "analytics"},
        magnitude=18.0,
        plant=_idle_during_deploy,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=0.0, plant=lambda _: None),
)

LABELS = {"datname": DATABASES}

DEMO = Case(
    id="demo",
    cause="idle_in_transaction",
    seed=9,
    expect={"datname": "billing", "state": "idle in transaction"},
)

CASES = (
    Case(
        id="db-idle-tx",
        cause="idle_in_transaction",
        seed=31,
        expect={"datname": "billing", "state": "idle in transaction"},
    ),
    Case(id="db-lock", cause="lock_pileup", seed=32, expect={"datname": "inference"}),
    Case(id="db-down", cause="down", seed=33, expect={"instance": instance_of("svc-db-down")}),
    Case(id="db-deadlocks", cause="deadlocks", seed=34, expect={"datname": "orders"}),
    Case(
        id="db-idle-deploy",
        cause="idle_during_deploy",
        seed=35,
        expect={"datname": "analytics", "state": "idle in transaction"},
        not_named={"version": NEW_BUILD},
    ),
    Case(id="db-quiet", cause="none", seed=36, expect={}),
)
