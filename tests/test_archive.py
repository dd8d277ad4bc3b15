"""The archive, on real folders and a real SQLite index, with real concurrent processes."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from workbooks.archive.store import Archive, RunRecord, incident_id
from workbooks.core.errors import ArchiveError, RunNotFoundError
from workbooks.core.findings import Finding

RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"
START = datetime(2026, 11, 28, 14, 5, 7, tzinfo=UTC)


def record(**changes: object) -> RunRecord:
    values: dict[str, object] = {
        "incident_id": incident_id("{}:{}", START, "HighLatency"),
        "runbook": "high-latency",
        "runbook_hash": "0123456789ab",
        "status": "succeeded",
        "started_at": START,
        "finished_at": START + timedelta(seconds=3),
        "duration_seconds": 3.0,
        "source": "demo",
        "alert_name": "HighLatency",
        "severity": "critical",
        "service": "api",
        "alert_status": "firing",
        "labels": {"alertname": "HighLatency", "service": "api"},
        "group_key": "{}:{}",
        "alert_starts_at": START,
    }
    values.update(changes)
    return RunRecord.model_validate(values)


def commit(archive: Archive, findings: list[Finding] | None = None, **changes: object) -> RunRecord:
    findings = findings or []
    staging = archive.stage()
    base = record(**changes)
    (staging / "workbook.ipynb").write_text("{}")
    document = {
        "incident": base.incident_id,
        "runbook": base.runbook,
        "status": base.status,
        "started_at": base.started_at.isoformat(),
        "finished_at": base.finished_at.isoformat(),
        "findings": [finding.to_dict() for finding in findings],
    }
    (staging / "findings.json").write_text(json.dumps(document))
    return archive.commit(staging, base.with_findings(findings))


def test_incident_id_is_stable_and_safe_whatever_the_labels() -> None:
    first = incident_id('{}:{alertname="HighLatency"}', START, "HighLatency")
    same_instant = START.astimezone(timezone(timedelta(hours=-5)))
    assert first == incident_id('{}:{alertname="HighLatency"}', same_instant, "HighLatency")
    assert re.fullmatch(r"20261128T1405Z-highlatency-[0-9a-f]{8}", first)
    assert first != incident_id('{}:{alertname="HighLatency"}', START + timedelta(minutes=1), "x")
    hostile = incident_id("k", START, "../../etc/passwd; rm -rf / ÄÖ")
    assert re.fullmatch(r"[0-9TZ]+-[a-z0-9-]+-[0-9a-f]{8}", hostile) and "/" not in hostile
    assert incident_id("k", START, "!!!").split("-")[1] == "alert"


def test_commit_lays_out_the_run_and_indexes_it(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    findings = [
        Finding(severity="warning", title="retries up"),
        Finding(severity="critical", title="p99 tripled", likely_cause=True),
    ]
    committed = commit(archive, findings)
    assert committed.run_id == "20261128T140507Z-high-latency"
    assert committed.path == tmp_path / committed.incident_id / committed.run_id
    assert json.loads((committed.path / "run.json").read_text())["run_id"] == committed.run_id
    assert list((tmp_path / ".staging").iterdir()) == []
    assert committed.top_finding_title == "p99 tripled"
    assert committed.finding_counts == {"critical": 1, "warning": 1, "info": 0}
    assert archive.get(committed.run_id) == committed
    assert archive.get(committed.incident_id) == committed
    assert [finding.title for finding in archive.findings(committed)] == [
        "retries up",
        "p99 tripled",
    ]
    assert archive.show(committed.run_id)["runbook"] == "high-latency"
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert connection.execute("SELECT count(*) FROM findings").fetchone()[0] == 2
        assert connection.execute("SELECT count(*) FROM incidents").fetchone()[0] == 1
    connection.close()


def test_same_second_same_runbook_gets_a_suffix(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    ids = [commit(archive).run_id for _ in range(3)]
    other_incident = commit(archive, incident_id=incident_id("other", START, "HighLatency"))
    base = "20261128T140507Z-high-latency"
    assert ids == [base, f"{base}-2", f"{base}-3"]
    assert other_incident.run_id == f"{base}-4"  # run ids are unique across the archive


def test_runs_newest_first_with_filters(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    now = datetime.now(UTC)
    old = commit(archive, started_at=now - timedelta(days=10), finished_at=now)
    recent = commit(archive, started_at=now - timedelta(hours=1), finished_at=now)
    other = commit(
        archive, runbook="high-cpu", started_at=now - timedelta(hours=2), finished_at=now
    )
    assert [run.run_id for run in archive.runs()] == [recent.run_id, other.run_id, old.run_id]
    assert archive.runs(runbook="high-cpu") == [other]
    assert archive.runs(since=timedelta(days=7)) == [recent, other]
    assert archive.runs(limit=1) == [recent]
    assert archive.get(old.incident_id) == recent  # an incident id means its newest run


def test_unknown_id_says_how_to_find_ids(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    with pytest.raises(RunNotFoundError, match="workbook list"):
        archive.get("nope")
    commit(archive)
    with pytest.raises(RunNotFoundError, match="workbook list"):
        archive.get("../nope")
    assert archive.runs(runbook="nope") == []


def test_failed_runs_are_archived_with_their_error(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    error = {
        "kind": "cell-timeout",
        "ename": "CellTimeoutError",
        "evalue": "cell ran longer than 120 s",
        "cell_index": 7,
        "message": "cell 7 (In [5]) timed out after 120 s",
    }
    committed = commit(archive, status="failed", error=error)
    assert archive.get(committed.run_id).error == error
    assert archive.runs()[0].status == "failed"


def test_index_failure_keeps_the_run_and_reindex_recovers_it(tmp_path: Path) -> None:
    archive = Archive(tmp_path, busy_timeout_seconds=0.1)
    commit(archive)  # creates the index
    blocker = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ArchiveError, match="workbook reindex"):
            commit(archive, runbook="high-cpu")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    folder = next(tmp_path.glob("*/*-high-cpu"))
    assert (folder / "run.json").exists() and not list((tmp_path / ".staging").iterdir())
    assert [run.runbook for run in archive.runs()] == ["high-latency"]
    assert archive.get(folder.name).runbook == "high-cpu"  # found in the folders all the same
    assert archive.reindex() == 2
    assert sorted(run.runbook for run in archive.runs()) == ["high-cpu", "high-latency"]


def test_reindex_rebuilds_a_lost_index_and_ignores_staging(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    committed = commit(archive, [Finding(severity="info", title="fine")])
    archive.stage()  # an unfinished run
    (tmp_path / "index.sqlite").unlink()
    for leftover in tmp_path.glob("index.sqlite-*"):
        leftover.unlink()
    assert archive.runs() == []
    assert archive.reindex() == 1
    assert archive.runs() == [committed]
    assert archive.findings(archive.get(committed.run_id))[0].title == "fine"


def test_staging_is_discarded_and_cleaned(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first, second = archive.stage(), archive.stage()
    archive.discard(first)
    assert not first.exists()
    assert archive.clean_staging(older_than=timedelta(0)) == []  # this live process owns it
    assert second.is_dir()
    by_hand = tmp_path / ".staging" / "someone-elses"  # an owner we cannot check: by age
    by_hand.mkdir()
    assert archive.clean_staging() == []
    assert archive.clean_staging(older_than=timedelta(0)) == [by_hand]
    with pytest.raises(ArchiveError, match="not a staging folder"):
        archive.commit(tmp_path, record())


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from workbooks.archive.store import Archive, RunRecord, incident_id

    root, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    archive = Archive(root)
    start = datetime(2026, 11, 28, 14, 5, 7, tzinfo=UTC)
    for number in range(count):
        staging = archive.stage()
        archive.commit(staging, RunRecord(
            incident_id=incident_id(name, start, "HighLatency"), runbook="high-latency",
            runbook_hash="x", status="succeeded", started_at=start,
            finished_at=start + timedelta(seconds=1), duration_seconds=1.0, source="demo",
            alert_name="HighLatency", severity="warning", alert_status="firing"))
    """
)


def test_concurrent_writers_from_several_processes(tmp_path: Path) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"writer-{n}", "15"])
        for n in range(4)
    ]
    assert [process.wait(timeout=60) for process in processes] == [0, 0, 0, 0]
    archive = Archive(tmp_path)
    runs = archive.runs()
    assert len(runs) == 60 and len({run.run_id for run in runs}) == 60
    assert all((run.path / "run.json").exists() for run in runs)
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("SELECT count(*) FROM incidents").fetchone()[0] == 4
    connection.close()
    assert archive.reindex() == 60


KILLED_RUN = textwrap.dedent(
    """
    import sys
    from workbooks.core.alert import parse_alert_group
    from workbooks.archive.store import Archive
    from workbooks.core.config import Config
    from workbooks.running.runner import run_alert

    group = parse_alert_group({"version": "4", "status": "firing", "groupKey": "k", "alerts": [
        {"status": "firing", "labels": {"alertname": "SlowInvestigation"},
         "startsAt": "2026-11-28T14:05:00Z"}]})
    run_alert(group, config=Config(notebooks=sys.argv[2]), archive=Archive(sys.argv[1]),
              source="demo")
    """
)


def _processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_run_killed_midway_leaves_only_staging(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root), str(RUNBOOKS)])
    deadline = time.monotonic() + 30
    while not list(root.glob(".staging/*/sleeping")):  # the kernel is in its 60 s cell
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert sorted(path.name for path in root.iterdir()) == [".staging"]
    archive = Archive(root)
    assert archive.runs() == [] and archive.reindex() == 0
    # The orphaned kernel notices its parent is gone and exits (ipykernel's parent poller).
    deadline = time.monotonic() + 10
    while (orphans := _processes_in(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in orphans:  # never leave a kernel behind, even if this test fails
        os.kill(pid, signal.SIGKILL)
    assert orphans == []
    assert len(archive.clean_staging(older_than=timedelta(0))) == 1
    assert list((root / ".staging").iterdir()) == []


def test_an_index_of_an_older_schema_is_rebuilt_from_the_folders(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    committed = commit(archive, [Finding(severity="warning", title="retries up")])
    archive.add_note(committed.incident_id, "restarted api-3", author="ana")
    (tmp_path / "index.sqlite").unlink()
    for leftover in tmp_path.glob("index.sqlite-*"):
        leftover.unlink()
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:  # what version 1 left
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (1)")
        connection.execute("CREATE TABLE runs (run_id TEXT)")
    connection.close()
    assert archive.runs() == [committed]
    assert archive.incident(committed.incident_id).note_count == 1
    assert [i.incident_id for i in archive.incidents(search="retries")] == [committed.incident_id]
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    connection.close()


def test_an_index_of_a_newer_schema_is_refused_with_a_way_out(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    commit(archive)
    with sqlite3.connect(tmp_path / "index.sqlite") as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    connection.close()
    with pytest.raises(ArchiveError, match="newer than this package"):
        archive.runs()
    assert archive.reindex() == 1 and len(archive.runs()) == 1


def test_incidents_newest_first_with_filters_and_search(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first = START - timedelta(days=2)
    latency = commit(
        archive,
        [Finding(severity="critical", title="model 2.4.0 rollout slowed /v1/vision")],
        incident_id=incident_id("a", first, "HighLatency"),
        alert_starts_at=first,
        labels={"alertname": "HighLatency", "service": "inference-api", "route": "/v1/vision"},
        service="inference-api",
    )
    replayed = commit(
        archive,
        incident_id=latency.incident_id,
        alert_starts_at=first,
        started_at=START + timedelta(hours=1),
        severity="warning",
        service="inference-api",
        status="failed",
        error={"kind": "exception", "message": "boom"},
    )
    memory = commit(
        archive,
        [Finding(severity="warning", title="api-2 leaks 40 MiB an hour")],
        incident_id=incident_id("b", START, "HighMemory"),
        runbook="high-memory",
        alert_name="HighMemory",
        severity="warning",
        service="<script>alert(1)</script>",
        labels={"alertname": "HighMemory", "service": "<script>alert(1)</script>"},
    )

    def ids(**filters: object) -> list[str]:
        return [found.incident_id for found in archive.incidents(**filters)]  # type: ignore[arg-type]

    assert ids() == [memory.incident_id, latency.incident_id]  # by when they fired
    [summary] = archive.incidents(runbook="high-latency")
    assert summary.run_count == 2 and summary.severity == "critical"  # the highest of its runs
    assert summary.last_run.run_id == replayed.run_id and summary.runbooks == ["high-latency"]
    assert summary.starts_at == first and summary.status == "firing"
    assert ids(service="inference-api") == [latency.incident_id]
    assert ids(severity="warning") == [memory.incident_id, latency.incident_id]
    assert ids(severity="critical") == [latency.incident_id]
    assert ids(status="failed") == [latency.incident_id]  # its newest run failed
    assert ids(status="succeeded") == [memory.incident_id]
    assert ids(since=START - timedelta(hours=1)) == [memory.incident_id]
    assert ids(until=START - timedelta(hours=1)) == [latency.incident_id]
    assert ids(since=timedelta(days=3650)) == ids()  # a duration back from now
    assert ids(search="vision") == [latency.incident_id]  # a label value
    assert ids(search="/v1/vision rollout") == [latency.incident_id]  # words of a finding title
    assert ids(search="leak") == [memory.incident_id]  # a prefix
    assert ids(search="<script>") == [memory.incident_id]
    assert ids(search='" OR 1 -- ') == []
    assert ids(search="highmemory") == [memory.incident_id]  # the alertname
    assert ids(limit=1) == [memory.incident_id]
    assert archive.filter_values()["runbook"] == ["high-latency", "high-memory"]
    found = archive.incident(replayed.run_id)  # a run id means its incident
    assert found.incident_id == latency.incident_id
    assert [run.run_id for run in found.runs] == [latency.run_id, replayed.run_id]
    with pytest.raises(RunNotFoundError):
        archive.incident("nope")


def test_mark_resolved_writes_a_file_that_reindex_keeps(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    committed = commit(archive)
    ended = START + timedelta(minutes=50)
    assert archive.mark_resolved("20261128T1405Z-nothing-00000000", ended) is False
    assert archive.mark_resolved("../etc", ended) is False
    assert archive.mark_resolved(committed.incident_id, ended) is True
    document = json.loads((tmp_path / committed.incident_id / "resolved.json").read_text())
    assert document["ended_at"] == "2026-11-28T14:55:07Z"
    [summary] = archive.incidents(status="resolved")
    assert summary.ended_at == ended and archive.incidents(status="firing") == []
    commit(archive)  # a later run (a replay of the firing alert) does not reopen it
    assert archive.reindex() == 2
    assert archive.incident(committed.incident_id).status == "resolved"
    assert archive.incident(committed.incident_id).ended_at == ended
    assert archive.stats().incidents == 1


def test_notes_are_appended_and_unknown_incidents_refused(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    committed = commit(archive)
    with pytest.raises(RunNotFoundError, match="workbook list"):
        archive.add_note("20261128T1405Z-nothing-00000000", "x", author="ana")
    with pytest.raises(ArchiveError, match="needs some text"):
        archive.add_note(committed.incident_id, "  ", author="ana")
    note = archive.add_note(committed.incident_id, "drained api-3\nthen watched p99", author="ana")
    notes_file = tmp_path / committed.incident_id / "notes.jsonl"
    with notes_file.open("a") as handle:
        handle.write('{"cut short by a cra')  # a crash mid-line loses that line only
    later = archive.add_note(committed.incident_id, "p99 back to normal", author="ben")
    assert archive.notes(committed.incident_id) == [note, later]
    assert note.text == "drained api-3\nthen watched p99" and note.created_at.tzinfo is not None
    assert archive.incident(committed.incident_id).note_count == 2


NOTE_WRITER = textwrap.dedent(
    """
    import sys
    from workbooks.archive.store import Archive

    archive = Archive(sys.argv[1])
    for number in range(int(sys.argv[4])):
        archive.add_note(sys.argv[2], f"note {number}", author=sys.argv[3])
    """
)


def test_notes_from_several_processes_at_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    committed = commit(archive)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", NOTE_WRITER, str(tmp_path), committed.incident_id, f"w{n}", "20"]
        )
        for n in range(4)
    ]
    assert [process.wait(timeout=60) for process in processes] == [0, 0, 0, 0]
    lines = (tmp_path / committed.incident_id / "notes.jsonl").read_text().splitlines()
    assert len(lines) == 80 and all(json.loads(line)["text"] for line in lines)
    assert len(archive.notes(committed.incident_id)) == 80
    assert archive.incident(committed.incident_id).note_count == 80
