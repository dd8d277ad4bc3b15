"""The index and the intake ledger on a real PostgreSQL, started here on a loopback port.

One cluster for the module (Debian's `postgresql`; skipped, saying so, when it is missing), a
fresh database per test. The archive's own tests run again with WORKBOOKS_DATABASE_URL set, so
the same assertions hold on both backends; the rest is what only a shared database makes
possible or dangerous: claims from many threads and processes, takeovers, credentials.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import test_archive
import test_service
from test_archive import START, commit, record
from workbooks.archive import index
from workbooks.archive.store import Archive, incident_id
from workbooks.core.config import load_config
from workbooks.core.errors import ArchiveError, ConfigError
from workbooks.core.findings import Finding
from workbooks.service.intake import Intake, PlannedRun, QueuedRun
from workbooks.synthetic.live import free_port
from workbooks.synthetic.postgres import PostgresCluster, postgres_bindir, start_postgres

PASSWORD = "pw-Never-Shown-7f3a"
_numbers = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    if postgres_bindir() is None:
        pytest.skip("needs PostgreSQL's initdb and postgres (scripts/install-system-deps)")
    # The superuser is trusted; the user `app` must give its password (scram), to test that the
    # password never shows. The file must be readable by the cluster's user (postgres, as root).
    hba_dir = Path(tempfile.mkdtemp(prefix="workbooks-hba-"))
    hba_dir.chmod(0o755)
    hba = hba_dir / "pg_hba.conf"
    hba.write_text(
        "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    hba.chmod(0o644)
    started = start_postgres(
        tmp_path_factory.mktemp("pg"), max_connections=120, settings={"hba_file": str(hba)}
    )
    try:
        started.psql(f"CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'")
        yield started
    finally:
        started.stop()
        shutil.rmtree(hba_dir, ignore_errors=True)


def new_database(cluster: PostgresCluster, *, owner: str = "postgres") -> str:
    name = f"t{os.getpid()}_{next(_numbers)}"
    cluster.psql(f"CREATE DATABASE {name} OWNER {owner}")
    return name


@pytest.fixture
def database_url(cluster: PostgresCluster) -> str:
    return f"postgresql://postgres@127.0.0.1:{cluster.port}/{new_database(cluster)}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None (the default: SQLite in the archive folder) or a PostgreSQL URL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("database_url")


# -- the archive's own tests, on PostgreSQL ------------------------------------------------------

# Those that go through the Archive only (the others open index.sqlite themselves).
ARCHIVE_TESTS = [
    test_archive.test_same_second_same_runbook_gets_a_suffix,
    test_archive.test_runs_newest_first_with_filters,
    test_archive.test_unknown_id_says_how_to_find_ids,
    test_archive.test_failed_runs_are_archived_with_their_error,
    test_archive.test_incidents_newest_first_with_filters_and_search,
    test_archive.test_mark_resolved_writes_a_file_that_reindex_keeps,
    test_archive.test_notes_are_appended_and_unknown_incidents_refused,
    test_archive.test_notes_from_several_processes_at_once,
]


@pytest.mark.parametrize("archive_test", ARCHIVE_TESTS, ids=lambda test: test.__name__[5:])
def test_the_archive_tests_pass_on_postgres(
    archive_test: Callable[[Path], None],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKBOOKS_DATABASE_URL", database_url)  # child processes inherit it
    archive_test(tmp_path)
    assert not (tmp_path / "index.sqlite").exists()


def test_concurrent_writers_from_several_processes_on_postgres(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("WORKBOOKS_DATABASE_URL", database_url)
    writers = [
        subprocess.Popen([sys.executable, "-c", test_archive.WRITER, str(tmp_path), f"w-{n}", "10"])
        for n in range(4)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0, 0, 0]
    runs = Archive(tmp_path).runs()
    assert len(runs) == 40 and len({run.run_id for run in runs}) == 40
    assert len(Archive(tmp_path).incidents()) == 4
    assert Archive(tmp_path).reindex() == 40


# The service's restarts and takeovers, with the ledger and index in PostgreSQL.
SERVICE_TESTS = [
    test_service.test_an_accepted_alert_survives_a_kill_and_runs_once,
    test_service.test_a_run_killed_midway_runs_again_once_after_restart,
    test_service.test_a_run_archived_by_a_worker_that_died_is_recorded_not_run_again,
]


@pytest.mark.parametrize("service_test", SERVICE_TESTS, ids=lambda test: test.__name__[5:])
def test_the_service_tests_pass_on_postgres(
    service_test: Callable[[Path], None],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKBOOKS_DATABASE_URL", database_url)  # the service processes too
    service_test(tmp_path)
    archive = tmp_path / "archive"
    assert not (archive / "index.sqlite").exists() and not (archive / "intake.sqlite").exists()
    assert Archive(archive, database=database_url).runs()


# -- the same answers on both --------------------------------------------------------------------

SEARCHES = [
    "api",
    "inference-api",
    "infer",
    "p99 tripled",
    "TRIPLED",
    "10.0.0",
    "pod-7",
    "rolled back",
    "<script>alert(1)</script>",
    'quote" OR 1=1 --',
    "nothing-like-this",
    "service=payments",
    "high_latency",
    "",
]


def _fill(archive: Archive) -> None:
    labels = [
        {"service": "inference-api", "instance": "10.0.0.7:9090", "pod": "pod-7"},
        {"service": "payments", "instance": "db.example.com:5432", "pod": "pod-12"},
        {"service": "api", "team": "high_latency"},
    ]
    for n, extra in enumerate(labels):
        started = START + timedelta(hours=n)
        committed = commit(
            archive,
            [Finding(severity="critical" if n else "warning", title=f"p99 tripled on {n}")],
            incident_id=incident_id(f"group-{n}", started, "HighLatency"),
            started_at=started,
            finished_at=started + timedelta(seconds=3),
            alert_starts_at=started,
            service=extra["service"],
            labels={"alertname": "HighLatency", **extra},
        )
        if n == 1:
            archive.add_note(committed.incident_id, "rolled back the deploy", author="ana")


def test_search_and_filters_give_the_same_incidents_on_both(
    database_url: str, tmp_path: Path
) -> None:
    on_sqlite = Archive(tmp_path / "a")
    on_postgres = Archive(tmp_path / "b", database=database_url)
    for archive in (on_sqlite, on_postgres):
        _fill(archive)

    def found(archive: Archive, **filters: object) -> list[tuple[str, ...]]:
        return [
            (i.incident_id, i.severity, ",".join(i.runbooks)) for i in archive.incidents(**filters)
        ]

    for text in SEARCHES:
        assert found(on_sqlite, search=text) == found(on_postgres, search=text), text
    assert len(found(on_postgres, search="inference-api")) == 1
    assert len(found(on_postgres, search="rolled back")) == 1
    assert found(on_postgres, search="nothing-like-this") == []
    for filters in ({"service": "payments"}, {"severity": "critical"}, {"status": "firing"}):
        assert found(on_sqlite, **filters) == found(on_postgres, **filters), filters
    assert on_sqlite.filter_values() == on_postgres.filter_values()
    same = ("incidents", "runs", "notes", "oldest_run", "newest_run")
    sqlite_stats, postgres_stats = on_sqlite.stats(), on_postgres.stats()
    assert [getattr(sqlite_stats, key) for key in same] == [
        getattr(postgres_stats, key) for key in same
    ]


def test_reindex_rebuilds_the_postgres_index_from_the_folders(
    database_url: str, tmp_path: Path, cluster: PostgresCluster
) -> None:
    archive = Archive(tmp_path, database=database_url)
    _fill(archive)
    before = archive.incidents()
    database = database_url.rsplit("/", 1)[1]
    cluster.psql("DROP SCHEMA workbooks_index CASCADE", database=database)
    assert archive.reindex() == 3
    assert archive.incidents() == before
    # An index of an older schema version is rebuilt on first use, as in SQLite.
    cluster.psql("UPDATE workbooks_index.schema_version SET version = 1", database=database)
    assert Archive(tmp_path, database=database_url).incidents() == before
    found = cluster.psql("SELECT version FROM workbooks_index.schema_version", database=database)
    assert found == str(index.SCHEMA_VERSION)


def test_the_cli_reindexes_into_the_configured_database(
    database_url: str, tmp_path: Path, cli: Callable[..., Any]
) -> None:
    archive = Archive(tmp_path / "archive")  # written on SQLite: the folders are the truth
    _fill(archive)
    result = cli(
        "--archive",
        str(tmp_path / "archive"),
        "reindex",
        env={"WORKBOOKS_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.stderr
    assert "indexed 3 runs" in result.stdout
    assert len(Archive(tmp_path / "archive", database=database_url).incidents()) == 3


# -- the ledger: exactly once --------------------------------------------------------------------


def planned(n: int) -> PlannedRun:
    return PlannedRun(
        runbook="high-latency",
        incident_id=f"incident-{n}",
        group_key=f"group-{n}",
        firing=(f"fp-{n}",),
        ended_at=None,
        payload={"n": n},
    )


def test_identical_deliveries_at_once_queue_one_run_each(
    backend: str | None, tmp_path: Path
) -> None:
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=3600, database=backend)
    barrier = threading.Barrier(8)
    queued: list[str] = []

    def deliver() -> None:
        barrier.wait()
        for decision in intake.accept([planned(n) for n in range(20)], source="test"):
            if decision.action == "queued":
                queued.append(decision.incident_id)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(queued) == sorted(f"incident-{n}" for n in range(20))
    assert intake.counts()["queued"] == 20


def _claim_all(database: str | None, folder: str, task_ids: list[str], out: object) -> None:
    intake = Intake.in_archive(folder, dedup_window_seconds=3600, database=database)
    got = []
    for task_id in task_ids:
        run = QueuedRun(
            task_id=task_id,
            runbook="high-latency",
            incident_id="i",
            payload={},
            source="test",
            accepted_at=time.time(),
            state="queued",
        )
        if intake.claim(run) is not None:
            got.append(task_id)
    out.put(got)  # type: ignore[attr-defined]


def test_many_processes_claiming_the_same_runs_get_each_exactly_once(
    backend: str | None, tmp_path: Path
) -> None:
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=3600, database=backend)
    decisions = intake.accept([planned(n) for n in range(40)], source="test")
    task_ids = [decision.task_id for decision in decisions]
    # and 10 the ledger has never seen (a queue that outlived its ledger): recorded, claimed once
    task_ids += [f"unknown-{n}" for n in range(10)]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_claim_all, args=(backend, str(tmp_path), task_ids[::step], out))
        for step in (1, 1, 1, -1, -1, -1)
    ]
    for worker in workers:
        worker.start()
    claimed = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    counted = Counter(task_id for got in claimed for task_id in got)
    assert sorted(counted) == sorted(task_ids)
    assert set(counted.values()) == {1}
    assert intake.counts()["running"] == 50


def test_threads_claiming_the_same_run_get_it_once(backend: str | None, tmp_path: Path) -> None:
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=3600, database=backend)
    (decision,) = intake.accept([planned(1)], source="test")
    assert decision.run is not None
    barrier = threading.Barrier(12)
    winners: list[str] = []

    def claim(n: int) -> None:
        barrier.wait()
        if intake.claim(decision.run, owner=f"elsewhere:1:{n}") is not None:
            winners.append(f"elsewhere:1:{n}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert intake.get(decision.task_id).owner == winners[0]


def test_an_expired_lease_is_taken_over_and_the_late_worker_cannot_finish(
    backend: str | None, tmp_path: Path
) -> None:
    intake = Intake.in_archive(
        tmp_path, dedup_window_seconds=3600, lease_seconds=30, database=backend
    )
    (decision,) = intake.accept([planned(1)], source="test")
    now = time.time()
    # An owner on another host: only its silence tells that it is gone.
    first = intake.claim(decision.run, owner="host-a:10:x", now=now)
    assert first is not None and first.attempts == 1
    assert intake.claim(decision.run, owner="host-b:20:y", now=now + 10) is None
    assert intake.orphans(pending=set(), now=now + 10) == []
    (orphan,) = intake.orphans(pending=set(), now=now + 31)
    assert orphan.task_id == decision.task_id and orphan.owner == "host-a:10:x"
    second = intake.claim(orphan, owner="host-b:20:y", now=now + 31)
    assert second is not None and second.attempts == 2 and second.owner == "host-b:20:y"
    assert not intake.finish(decision.task_id, "succeeded", owner="host-a:10:x")
    assert intake.finish(decision.task_id, "succeeded", owner="host-b:20:y", run_ids=["r1"])
    assert intake.get(decision.task_id).run_ids == ("r1",)
    assert intake.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0}


def test_a_heartbeat_keeps_the_lease(backend: str | None, tmp_path: Path) -> None:
    intake = Intake.in_archive(
        tmp_path, dedup_window_seconds=3600, lease_seconds=1.0, database=backend
    )
    (decision,) = intake.accept([planned(1)], source="test")
    assert intake.claim(decision.run, owner="host-a:10:x") is not None
    with intake.heartbeat(decision.task_id, owner="host-a:10:x", interval=0.2):
        time.sleep(1.5)
        assert intake.orphans(pending=set()) == []
    time.sleep(1.2)
    assert [run.task_id for run in intake.orphans(pending=set())] == [decision.task_id]


def test_resolutions_and_dedup_behave_the_same(backend: str | None, tmp_path: Path) -> None:
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=3600, database=backend)
    assert [d.action for d in intake.accept([planned(1)], source="t")] == ["queued"]
    assert [d.action for d in intake.accept([planned(1)], source="t")] == ["deduplicated"]
    ended = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    resolved = PlannedRun(
        runbook="high-latency",
        incident_id="incident-1",
        group_key="group-1",
        firing=(),
        ended_at=ended,
        payload={},
    )
    assert [d.action for d in intake.accept([resolved], source="t")] == ["resolved"]
    assert intake.resolution("incident-1") == ended
    assert [d.action for d in intake.accept([resolved], source="t")] == ["resolved"]
    assert [d.action for d in intake.accept([planned(1)], source="t")] == ["queued"]
    assert intake.resolution("incident-1") is None
    assert [run.state for run in intake.runs()] == ["queued", "queued"]


# -- credentials and a dead database -------------------------------------------------------------


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_the_password_works_and_never_shows(
    cluster: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    database = new_database(cluster, owner="app")
    good = f"postgresql://app:{PASSWORD}@127.0.0.1:{cluster.port}/{database}"
    archive = Archive(tmp_path, database=good)
    commit(archive)
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=60, database=good)
    intake.accept([planned(1)], source="test")
    assert len(archive.runs()) == 1 and intake.counts()["queued"] == 1

    wrong = f"postgresql://app:{PASSWORD}x@127.0.0.1:{cluster.port}/{database}"
    for attempt in (
        lambda: Archive(tmp_path, database=wrong).runs(),
        lambda: commit(Archive(tmp_path, database=wrong)),
        lambda: Intake.in_archive(tmp_path, dedup_window_seconds=60, database=wrong),
    ):
        with pytest.raises(ArchiveError) as caught:
            attempt()
        said = _everything_said(caught.value)
        assert "password authentication failed" in said
        assert f"127.0.0.1:{cluster.port}" in said
        assert PASSWORD not in said
    written = [path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()]
    assert not any(PASSWORD.encode() in data for data in written)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(load_config(env={"WORKBOOKS_DATABASE_URL": good}))


def test_a_dead_database_says_which_host_and_what_to_do(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    dead = f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/workbooks"
    for attempt in (
        lambda: Archive(tmp_path, database=dead).runs(),
        lambda: commit(Archive(tmp_path, database=dead)),
        lambda: Intake.in_archive(tmp_path, dedup_window_seconds=60, database=dead),
    ):
        with pytest.raises(ArchiveError) as caught:
            attempt()
        said = _everything_said(caught.value)
        assert f"postgresql://127.0.0.1:{port}/workbooks" in str(caught.value)
        assert "check that PostgreSQL runs there" in str(caught.value)
        assert PASSWORD not in said and "app:" not in said


def test_a_database_setting_that_is_not_postgresql_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"WORKBOOKS_DATABASE_URL": f"mysql://app:{PASSWORD}@db/x"})
    assert "PostgreSQL URL" in str(caught.value) and PASSWORD not in _everything_said(caught.value)


def test_without_a_database_everything_stays_in_the_archive_folder(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    commit(archive)
    Intake.in_archive(tmp_path, dedup_window_seconds=60).accept([planned(1)], source="t")
    assert (tmp_path / "index.sqlite").is_file() and (tmp_path / "intake.sqlite").is_file()
    assert [run.runbook for run in archive.runs()] == [record().runbook]


def test_a_ledger_of_a_newer_schema_is_refused_with_a_way_out(
    backend: str | None, tmp_path: Path
) -> None:
    intake = Intake.in_archive(tmp_path, dedup_window_seconds=60, database=backend)
    with intake.store.transaction() as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ArchiveError, match=r"newer than this package's .*upgrade"):
        Intake.in_archive(tmp_path, dedup_window_seconds=60, database=backend)
