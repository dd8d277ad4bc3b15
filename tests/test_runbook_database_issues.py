"""database-issues: its steps on small hand-built frames, then the whole workbook on a real
PostgreSQL scraped by Debian's postgres_exporter and a real Prometheus.

The live tests plant the trouble with real sessions (left idle in a transaction until the
connections run short; a held lock other sessions queue behind), fire an alert that carries
only what postgres_exporter's alerts carry (the exporter's `instance`, no `service`), run the
workbook through the runner as `workbook run` does, and read its findings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config, load_config
from workbooks.core.findings import Finding, ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import database_issues, steps
from workbooks.runbooks.database_issues_data import terminate_idle_sql
from workbooks.running.runner import run_alert
from workbooks.synthetic.exporters import (
    POSTGRES_EXPORTER,
    missing_binaries,
    start_postgres_exporter,
)
from workbooks.synthetic.live import ScrapeTarget, start_live_prometheus
from workbooks.synthetic.postgres import (
    LAB_TABLE,
    PostgresCluster,
    hold_lock,
    idle_in_transaction,
    postgres_bindir,
    start_postgres,
)

START = pd.Timestamp("2026-11-20 12:00", tz="UTC")
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
INSTANCE = "db-1:9187"


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(alert_name: str = "PostgresqlTooManyConnections") -> Incident:
    return Incident(
        runbook="database-issues",
        alert_name=alert_name,
        labels={"alertname": alert_name, "instance": INSTANCE},  # no service, as the exporter's
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=Config(),
    )


def frame(
    series: dict[tuple[str, ...], tuple[float, float]],
    labels: tuple[str, ...],
    *,
    noise: float = 0.4,
) -> pd.DataFrame:
    """One series per key (label values in `labels` order): `before` until onset, then `after`,
    with noise rounded to whole sessions."""
    rng = np.random.default_rng(7)
    parts = []
    for key, (before, after) in series.items():
        values = np.where(TIMES >= ONSET, after, before) + rng.normal(0, noise, len(TIMES))
        columns = dict(zip(labels, key, strict=True))
        parts.append(pd.DataFrame({"timestamp": TIMES, **columns, "value": values.round()}))
    return pd.concat(parts, ignore_index=True)


def result(name: str, current: pd.DataFrame, unit: str = "count") -> QueryResult:
    """A result without a baseline window (a new server): steps compare with before the alert."""
    return QueryResult(name, name, "hand-built", unit, incident().window, 60, current, None)


def causes(found: Incident) -> list[Finding]:
    return [f for f in ranked(found.findings) if f.cause is not None]


# --- the steps ----------------------------------------------------------------------------------

SESSIONS = ("datname", "state")


def test_idle_sessions_in_a_small_database_are_named_not_the_largest_database() -> None:
    case = incident()
    sessions = result(
        "database_issues_sessions",
        frame(
            {
                ("inference", "idle"): (40, 40),
                ("inference", "active"): (20, 21),
                ("billing", "idle"): (5, 5),
                ("billing", "idle in transaction"): (0, 24),
            },
            SESSIONS,
        ),
    )
    database_issues.sessions(case, sessions)
    (cause,) = causes(case)
    assert cause.subject == {"datname": "billing", "state": "idle in transaction"}
    assert cause.cause == "limit"
    assert "pg_terminate_backend(pid)" in cause.recommendation
    assert "datname = 'billing' AND state = 'idle in transaction'" in cause.recommendation


def test_locks_held_by_idle_sessions_are_no_pileup_but_waiters_behind_an_old_one_are() -> None:
    case = incident()
    sessions = result(
        "database_issues_sessions",
        frame(
            {
                ("inference", "active"): (10, 22),  # 12 sessions waiting
                ("billing", "active"): (3, 3),
                ("billing", "idle in transaction"): (0, 20),
            },
            SESSIONS,
        ),
    )
    locks = result(
        "database_issues_locks_by_database",
        frame({("inference",): (15, 28), ("billing",): (4, 44)}, ("datname",)),
    )
    ages = frame(
        {("inference", "idle in transaction"): (1, 1800), ("billing", "idle"): (0, 0)}, SESSIONS
    )
    oldest = result("database_issues_oldest_transaction", ages, "seconds")
    empty = result("database_issues_locks_by_mode", pd.DataFrame())
    database_issues.locks(case, locks, empty, sessions, oldest)
    (cause,) = causes(case)
    assert cause.subject == {"datname": "inference"}
    assert cause.severity == "critical"  # 12 waiting >= 10
    assert "pg_blocking_pids" in cause.recommendation
    assert "billing" not in cause.title


def test_a_database_that_stopped_answering_is_the_cause_and_named_by_instance() -> None:
    case = incident("PostgresqlDown")
    up = result("database_issues_up", frame({(INSTANCE,): (1, 0)}, ("instance",), noise=0))
    assert database_issues.availability(case, up) is False
    (cause,) = causes(case)
    assert cause.severity == "critical"
    assert cause.subject == {"instance": INSTANCE}
    assert steps.trail(case).ongoing is True


def test_deadlocks_name_the_database_they_happen_in() -> None:
    case = incident("PostgresqlDeadLocks")
    deadlocks = frame({("orders",): (0, 3), ("inference",): (0, 0)}, ("datname",))
    database_issues.deadlocks(case, result("database_issues_deadlocks", deadlocks))
    (cause,) = causes(case)
    assert cause.subject == {"datname": "orders"}
    assert cause.severity == "warning"


def test_nothing_moved_is_a_quiet_run() -> None:
    case = incident()
    up = result("database_issues_up", frame({(INSTANCE,): (1, 1)}, ("instance",), noise=0))
    sessions = frame({("inference", "idle"): (40, 40), ("billing", "active"): (3, 3)}, SESSIONS)
    database_issues.availability(case, up)
    database_issues.sessions(case, result("database_issues_sessions", sessions))
    database_issues.replication(case, None)
    database_issues.resolution(case)
    top = ranked(case.findings)[0]
    assert top.title.startswith(steps.QUIET_PREFIX)
    assert not [f for f in case.findings if f.severity != "info"]


def test_replication_lag_is_read_only_for_a_replication_alert() -> None:
    assert database_issues.wants_replication(incident("PostgresqlReplicationLag"))
    assert not database_issues.wants_replication(incident("PostgresqlTooManyConnections"))


def test_the_sql_quotes_a_database_name() -> None:
    assert "datname = 'o''brien'" in terminate_idle_sql("o'brien", "idle in transaction")


# --- on a real PostgreSQL, postgres_exporter and Prometheus ------------------------------------

LIVE_INSTANCE = "db-live"


@pytest.fixture
def live_database(tmp_path: Path) -> Iterator[tuple[PostgresCluster, str]]:
    """PostgreSQL (max_connections 20) with databases billing and inference, its exporter, and
    a Prometheus scraping it every 2 s; yields once 30 s of quiet history are stored."""
    if postgres_bindir() is None:
        pytest.skip("needs Debian's postgresql (scripts/install-system-deps)")
    if missing_binaries([POSTGRES_EXPORTER, "prometheus"]):
        pytest.skip("needs prometheus-postgres-exporter and prometheus")
    started: list = []
    try:
        cluster = start_postgres(tmp_path / "pg", max_connections=20)
        started.append(cluster)
        for database in ("billing", "inference"):
            cluster.psql(f"CREATE DATABASE {database}")
        started.append(start_postgres_exporter(cluster.dsn, tmp_path / "exporter"))
        target = ScrapeTarget("postgres", started[-1].address, {"instance": LIVE_INSTANCE})
        prometheus = start_live_prometheus([target], tmp_path / "prom", interval_seconds=2)
        started.append(prometheus)
        prometheus.wait_for(f'pg_up{{instance="{LIVE_INSTANCE}"}} == 1')
        time.sleep(30)
        yield cluster, prometheus.url
    finally:
        for live in reversed(started):
            live.stop()


def _run_workbook(tmp_path: Path, prometheus_url: str, starts_at: datetime) -> list[dict]:
    """The alert postgres_exporter's rules fire (instance, no service), run as `workbook run`."""
    settings = {
        "archive": str(tmp_path / "archive"),
        # Two-second scrapes; a transaction minutes old is "long" in a test that lasts one.
        "prometheus": {"min_step_seconds": 2, "max_points": 5000},
        "runbooks": {"database-issues": {"thresholds": {"transaction_age_seconds_warning": 10}}},
    }
    config_file = tmp_path / "workbooks.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    labels = {
        "alertname": "PostgresqlTooManyConnections",
        "instance": LIVE_INSTANCE,
        "severity": "warning",
    }
    payload = {
        "receiver": "workbooks",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "PostgreSQL db-live misbehaves"},
                "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": "0123456789abcdef",
            }
        ],
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": '{}:{alertname="PostgresqlTooManyConnections"}',
        "truncatedAlerts": 0,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBOOKS_CONFIG", str(config_file))
        patch.setenv("WORKBOOKS_EVIDENCE_DIR", "evidence")
        config = load_config()
        archive = Archive(config.archive_dir)
        (record,) = run_alert(
            parse_alert_group(payload),
            config=config,
            archive=archive,
            source=prometheus_url,
            runbook_id="database-issues",
        )
    assert record.status == "succeeded", record.error
    return archive.show(record.run_id)["findings"]


def _planted_at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)


def test_live_idle_transactions_exhausting_connections_are_named(
    live_database: tuple[PostgresCluster, str], tmp_path: Path
) -> None:
    cluster, prometheus_url = live_database
    starts_at = _planted_at()
    # 16 sessions + the exporter's 2 = 18 of 20 connections.
    with idle_in_transaction(cluster, 16, database="billing"):
        time.sleep(24)
        findings = _run_workbook(tmp_path, prometheus_url, starts_at)
    top = findings[0]
    assert top["subject"] == {"datname": "billing", "state": "idle in transaction"}, findings
    assert top["cause"] == "limit"
    assert top["severity"] in ("critical", "warning")
    assert "pg_terminate_backend(pid)" in top["recommendation"]
    assert "datname = 'billing'" in top["recommendation"]
    titles = json.dumps([f["title"] for f in findings])
    assert "of max_connections in use now (18 of 20)" in titles


def test_live_lock_pileup_behind_a_long_transaction_is_named(
    live_database: tuple[PostgresCluster, str], tmp_path: Path
) -> None:
    cluster, prometheus_url = live_database
    # hold_lock creates its table in the postgres database only (lib/workbooks/synthetic/
    # postgres.py); the waiters in `inference` need it there.
    cluster.psql(f"CREATE TABLE {LAB_TABLE} (id int)", database="inference")
    starts_at = _planted_at()
    with hold_lock(cluster, waiters=4, database="inference"):
        time.sleep(24)
        findings = _run_workbook(tmp_path, prometheus_url, starts_at)
    top = findings[0]
    assert top["subject"] == {"datname": "inference"}, findings
    assert top["cause"] == "instance"
    assert top["severity"] == "warning"  # 4 waiting: at least 3, under 10
    assert "Sessions pile up behind a long transaction in inference" in top["title"]
    assert "pg_blocking_pids" in top["recommendation"]
    # The lone idle holder is no connection problem.
    assert not any(f.get("cause") == "limit" for f in findings)
