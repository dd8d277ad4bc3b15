"""Retention on real folders and a real index; notes that outlive reindex and new runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbooks.archive.report import render_report
from workbooks.archive.retention import folder_bytes
from workbooks.archive.store import Archive, RunRecord, incident_id
from workbooks.cli import main
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config
from workbooks.core.errors import RunNotFoundError
from workbooks.core.findings import Finding
from workbooks.notebook.incident import Incident
from workbooks.running.runner import run_alert

RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"
NOW = datetime.now(UTC)
# When each incident's alert fired; its runs may come much later (replays).
FIRED = {"old-only": NOW - timedelta(days=201), "mixed": NOW - timedelta(days=101)}


def archived_run(
    archive: Archive, *, age: timedelta, group: str, evidence_bytes: int = 4096
) -> RunRecord:
    """A run committed as the runner would, started ``age`` ago, with a notebook and evidence."""
    started = NOW - age
    fired = FIRED.get(group, started - timedelta(minutes=5))
    staging = archive.stage()
    (staging / "workbook.ipynb").write_text(json.dumps({"cells": [], "pad": "x" * 2000}))
    (staging / "evidence").mkdir()
    (staging / "evidence" / "latency.current.parquet").write_bytes(b"P" * evidence_bytes)
    (staging / "evidence" / "manifest.json").write_text('{"entries": []}')
    (staging / "alert.json").write_text("{}")
    finding = Finding(severity="critical", title=f"p99 tripled on {group}", likely_cause=True)
    record = RunRecord(
        incident_id=incident_id(group, fired, "HighLatency"),
        runbook="high-latency",
        runbook_hash="abc",
        status="succeeded",
        started_at=started,
        finished_at=started + timedelta(seconds=3),
        duration_seconds=3.0,
        source="demo",
        alert_name="HighLatency",
        severity="critical",
        service=group,
        alert_status="firing",
        labels={"alertname": "HighLatency", "service": group},
        group_key=group,
        alert_starts_at=fired,
    ).with_findings([finding])
    document = {"incident": record.incident_id, "findings": [finding.to_dict()]}
    (staging / "findings.json").write_text(json.dumps(document))
    return archive.commit(staging, record)


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    """Two old incidents (one with a recent run too) and a recent one; notes on the old ones."""
    archive = Archive(tmp_path / "archive")
    archived_run(archive, age=timedelta(days=200), group="old-only")
    archived_run(archive, age=timedelta(days=120), group="old-only")
    archived_run(archive, age=timedelta(days=100), group="mixed")
    archived_run(archive, age=timedelta(days=3), group="mixed")
    archived_run(archive, age=timedelta(days=1), group="recent")
    for run in archive.runs():
        archive.add_note(run.incident_id, f"looked at {run.run_id}", author="ana")
    return archive


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file but the index's, with its size and modification time."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith("index.sqlite")
    }


def folders_bytes(root: Path) -> int:
    return sum(size for size, _ in snapshot(root).values())


def test_a_dry_run_changes_nothing_and_says_what_it_would_free(archive: Archive) -> None:
    before, indexed = snapshot(archive.root), archive.runs()
    plan = archive.prune(older_than=timedelta(days=90))
    assert snapshot(archive.root) == before and archive.runs() == indexed
    assert not plan.applied
    old = [run for run in indexed if run.started_at < NOW - timedelta(days=90)]
    assert sorted(run.run_id for run in plan.runs) == sorted(run.run_id for run in old)
    assert all(run.action == "delete" for run in plan.runs)
    old_only = {run.incident_id for run in indexed if run.service == "old-only"}
    assert [gone.incident_id for gone in plan.incidents] == sorted(old_only)
    assert plan.bytes == sum(folder_bytes(run.path) for run in old) + sum(
        gone.bytes for gone in plan.incidents
    )
    lines = plan.describe()
    assert lines[0].startswith("would delete 3 runs") and f"{plan.bytes:,} bytes" in lines[0]
    assert lines[-1] == "dry run: nothing was deleted; pass --yes to delete"


def test_a_prune_frees_what_it_said(archive: Archive) -> None:
    before = folders_bytes(archive.root)
    planned = archive.prune(older_than=timedelta(days=90))
    done = archive.prune(older_than=timedelta(days=90), dry_run=False)
    assert done.applied and done.runs == planned.runs and done.bytes == planned.bytes
    assert before - folders_bytes(archive.root) == planned.bytes
    assert sorted(run.service for run in archive.runs()) == ["mixed", "recent"]
    assert {i.service for i in archive.incidents()} == {"mixed", "recent"}
    gone = planned.incidents[0]
    assert not gone.path.exists() and archive.notes(gone.incident_id) == []
    mixed = archive.incidents(service="mixed")[0]
    assert len(archive.notes(mixed.incident_id)) == 2  # its notes stay with its remaining run
    assert not list((archive.root / ".staging").iterdir())
    assert archive.reindex() == 2  # the index agrees with the folders
    assert archive.prune(older_than=timedelta(days=90)).runs == ()


def test_keep_findings_keeps_what_a_post_mortem_needs(archive: Archive) -> None:
    before = folders_bytes(archive.root)
    plan = archive.prune(older_than=timedelta(days=90), keep_findings=True, dry_run=False)
    assert (
        len(plan.runs) == 3
        and plan.incidents == ()
        and all(run.action == "strip" for run in plan.runs)
    )
    freed = before - folders_bytes(archive.root)
    # run.json grows by its pruned_at stamp: a few dozen bytes a run.
    assert 0 <= plan.bytes - freed <= 100 * len(plan.runs)
    for pruned in plan.runs:
        assert sorted(p.name for p in pruned.path.iterdir()) == [
            "alert.json",
            "findings.json",
            "run.json",
        ]
        record = archive.get(pruned.run_id)
        assert record.pruned_at is not None
        assert json.loads((pruned.path / "run.json").read_text())["pruned_at"]
        assert archive.findings(record)[0].title.startswith("p99 tripled")
    assert len(archive.runs()) == 5 and archive.stats().pruned_runs == 3
    assert [i.service for i in archive.incidents(search="old-only")] == ["old-only"]
    assert archive.reindex() == 5 and archive.stats().pruned_runs == 3  # kept in the folders
    again = archive.prune(older_than=timedelta(days=90), keep_findings=True)
    assert again.runs == ()  # nothing left to strip
    page = render_report(archive, plan.runs[0].run_id).read_text()
    assert "pruned on" in page and "p99 tripled on" in page


def test_the_cli_prunes_only_with_yes(archive: Archive) -> None:
    def invoke(*args: str) -> str:
        result = CliRunner().invoke(main, ["--archive", str(archive.root), "archive", *args])
        assert result.exit_code == 0, result.output
        return result.output

    dry = invoke("prune", "--older-than", "90d")
    assert "would delete 3 runs" in dry and "pass --yes" in dry
    assert len(archive.runs()) == 5
    stats = invoke("stats")
    assert "incidents   3" in stats and "runs        5 (0 pruned)" in stats
    done = json.loads(invoke("prune", "--older-than", "90d", "--keep-findings", "--yes", "--json"))
    assert done["applied"] and len(done["runs"]) == 3 and done["bytes"] > 0
    stats = json.loads(invoke("stats", "--json"))
    assert stats["runs"] == 5 and stats["pruned_runs"] == 3 and stats["notes"] == 5


def tiny_alert() -> dict:
    return {
        "version": "4",
        "status": "firing",
        "groupKey": '{}:{alertname="HighLatency"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighLatency", "service": "api"},
                "startsAt": "2026-11-28T14:05:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }


def test_notes_survive_reindex_and_new_runs(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    config = Config(notebooks=str(RUNBOOKS), archive=str(archive.root))
    (tmp_path / "evidence").mkdir()
    group = parse_alert_group(tiny_alert())
    [first] = run_alert(group, config=config, archive=archive, source=str(tmp_path / "evidence"))
    archive.add_note(first.incident_id, "drained api-3", author="ana")
    archive.add_note(first.run_id, "rolled back 2.4.0", author="ben")  # a run id means its incident
    # From the workbook: the same incident, derived from the alert's parameters.
    incident = Incident(
        runbook="tiny-latency",
        alert_name="HighLatency",
        labels={"alertname": "HighLatency", "service": "api"},
        starts_at="2026-11-28T14:05:00Z",
        group_key=group.group_key,
        source=str(tmp_path / "evidence"),
        config=config,
    )
    from_notebook = incident.note("p99 back to baseline", author="cy")
    assert from_notebook.incident_id == first.incident_id
    texts = ["drained api-3", "rolled back 2.4.0", "p99 back to baseline"]
    assert [n.text for n in archive.notes(first.incident_id)] == texts
    lines = (archive.root / first.incident_id / "notes.jsonl").read_text().splitlines()
    assert [json.loads(line)["author"] for line in lines] == ["ana", "ben", "cy"]

    for leftover in archive.root.glob("index.sqlite*"):
        leftover.unlink()
    assert archive.reindex() == 1
    assert archive.incident(first.incident_id).note_count == 3
    [second] = run_alert(group, config=config, archive=archive, source=str(tmp_path / "evidence"))
    assert second.incident_id == first.incident_id and second.run_id != first.run_id
    found = archive.incident(first.incident_id)
    assert [run.run_id for run in found.runs] == [first.run_id, second.run_id]
    assert [note.text for note in found.notes] == texts and found.note_count == 3
    assert [i.incident_id for i in archive.incidents(search="drained")] == [first.incident_id]


def test_a_workbook_without_an_archived_incident_says_where_to_look(tmp_path: Path) -> None:
    incident = Incident(
        runbook="tiny-latency",
        alert_name="HighLatency",
        starts_at="2026-11-28T14:05:00Z",
        source=str(tmp_path),
        config=Config(archive=str(tmp_path / "nowhere")),
    )
    with pytest.raises(RunNotFoundError, match="WORKBOOKS_ARCHIVE") as raised:
        incident.note("x")
    assert "workbook note" in str(raised.value) and str(tmp_path / "nowhere") in str(raised.value)
