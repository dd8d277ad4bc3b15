"""The archive's index: what list, search and the web pages read instead of the folders.

The folders are the truth (``workbooks.archive.store``); everything here is derived from them and
can be dropped and rebuilt (``Archive.reindex``). An index of an older schema version is rebuilt
the first time it is opened. It lives in SQLite (``<archive>/index.sqlite``) or, when
``database:`` names one, in PostgreSQL (docs/database.md); the same SQL serves both except where
:mod:`workbooks.archive.index_schema` (tables) and :mod:`workbooks.archive.index_search` (search)
say otherwise. Tables:

==================  ==========================================================================
``incidents``       one row per incident: alert, start, status (firing or resolved), end
``runs``            one row per run, with its ``run.json`` as indexed
``findings``        the findings of each run, most important first
``notes``           the actions taken, from each incident's ``notes.jsonl``
``search``          alert labels, finding titles and notes, for free-text search (FTS5 or
                    a ``tsvector``)
==================  ==========================================================================

Times are stored as fixed-width UTC text, so that text order is time order in SQL. This module
speaks SQL only; :mod:`workbooks.archive.store` turns rows into records and errors into messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbooks.archive.index_schema import (
    SCHEMA_VERSION,
    OldSchemaError,
    check_schema,
    connect,
    create_schema,
    dialect,
    drop_schema,
    index_time,
    parse_index_time,
    rollback,
    schema_version,
)
from workbooks.archive.index_search import fts_query, insert_searchable, search_clause
from workbooks.core.findings import SEVERITIES, Finding

if TYPE_CHECKING:
    from workbooks.archive.records import Note, RunRecord

# What the callers use, this module's own and the schema's and search's (re-exported).
__all__ = [
    "SCHEMA_VERSION",
    "IncidentFilter",
    "OldSchemaError",
    "check_schema",
    "connect",
    "counts",
    "create_schema",
    "delete_incident",
    "delete_run",
    "drop_schema",
    "fts_query",
    "index_time",
    "insert_note",
    "insert_run",
    "parse_index_time",
    "rebuild",
    "rollback",
    "schema_version",
    "select_incidents",
    "select_notes",
    "select_run",
    "select_runs",
    "select_values",
    "set_resolved",
]

_RUN_COLUMNS = {
    *("run_id", "incident_id", "runbook", "status", "duration_seconds", "source", "alert_name"),
    *("severity", "service", "top_finding_title", "top_finding_severity"),
}
_FINDING_COLUMNS = (
    *("severity", "title", "detail", "metric", "observed", "baseline", "unit"),
    *("recommendation", "likely_cause"),
)
# What identifies a row of each table, for the upsert that indexes a run again.
_KEYS = {"runs": ("run_id",), "findings": ("run_id", "position"), "notes": ("note_id",)}
# The newest run of an incident, as a correlated sub-query on ``i``.
_NEWEST_RUN = (
    "(SELECT {column} FROM runs WHERE runs.incident_id = i.incident_id "
    "ORDER BY started_at DESC, run_id DESC LIMIT 1)"
)
_SEVERITY_RANK_SQL = "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"
# Every runbook of an incident, comma-separated.
_RUNBOOKS_SQL = {
    "sqlite": "group_concat(DISTINCT runbook)",
    "postgres": "string_agg(DISTINCT runbook, ',')",
}


# -- writing -------------------------------------------------------------------------------------


def insert_run(connection: Any, record: RunRecord, findings: list[Finding], root: Path) -> None:
    """Index one run (again): its incident, its row, its findings and what search reads."""
    starts_at = record.alert_starts_at or record.started_at
    connection.execute(
        "INSERT INTO incidents (incident_id, group_key, alert_name, starts_at, status) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (incident_id) DO UPDATE SET status = "
        "CASE WHEN excluded.status = 'resolved' THEN 'resolved' ELSE incidents.status END",
        (
            record.incident_id,
            record.group_key,
            record.alert_name,
            index_time(starts_at),
            "resolved" if record.alert_status == "resolved" else "firing",
        ),
    )
    run = record.model_dump(include=_RUN_COLUMNS)
    run.update(
        started_at=index_time(record.started_at),
        finished_at=index_time(record.finished_at),
        error_kind=(record.error or {}).get("kind"),
        pruned=int(record.pruned_at is not None),
        path=record.path.relative_to(root).as_posix(),
        record=record.model_dump_json(),
        **{f"{name}_count": record.finding_counts.get(name, 0) for name in SEVERITIES},
    )
    _insert(connection, "runs", run)
    connection.execute("DELETE FROM findings WHERE run_id = ?", (record.run_id,))
    connection.execute("DELETE FROM search WHERE owner = ?", (record.run_id,))
    for position, finding in enumerate(findings):
        row = {name: getattr(finding, name) for name in _FINDING_COLUMNS}
        row.update(run_id=record.run_id, position=position, subject=json.dumps(finding.subject))
        _insert(connection, "findings", row)
        _searchable(connection, record.incident_id, record.run_id, "finding", finding.title)
    words = [record.incident_id, record.run_id, record.runbook, record.alert_name]
    words += [f"{key}={value}" for key, value in record.labels.items()]
    _searchable(connection, record.incident_id, record.run_id, "labels", " ".join(words))


def insert_note(connection: Any, note: Note) -> None:
    _insert(
        connection,
        "notes",
        {
            "note_id": note.note_id,
            "incident_id": note.incident_id,
            "created_at": index_time(note.created_at),
            "author": note.author,
            "text": note.text,
        },
    )
    connection.execute("DELETE FROM search WHERE owner = ?", (note.note_id,))
    _searchable(connection, note.incident_id, note.note_id, "note", f"{note.author} {note.text}")


def set_resolved(connection: Any, incident_id: str, ended_at: datetime) -> bool:
    cursor = connection.execute(
        "UPDATE incidents SET status = 'resolved', ended_at = ? WHERE incident_id = ?",
        (index_time(ended_at), incident_id),
    )
    return cursor.rowcount > 0


def delete_run(connection: Any, run_id: str) -> None:
    connection.execute("DELETE FROM findings WHERE run_id = ?", (run_id,))
    connection.execute("DELETE FROM search WHERE owner = ?", (run_id,))
    connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def delete_incident(connection: Any, incident_id: str) -> None:
    for table in ("search", "notes", "incidents"):
        connection.execute(f"DELETE FROM {table} WHERE incident_id = ?", (incident_id,))


def _searchable(connection: Any, incident_id: str, owner: str, kind: str, text: str) -> None:
    insert_searchable(connection, dialect(connection), incident_id, owner, kind, text)


def _insert(connection: Any, table: str, row: dict[str, Any]) -> None:
    """Insert or replace the row with the same key (an upsert: both dialects speak it)."""
    keys = _KEYS[table]
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    updates = ", ".join(f"{name} = excluded.{name}" for name in row if name not in keys)
    connection.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}",
        tuple(row.values()),
    )


# -- reading -------------------------------------------------------------------------------------


def select_runs(
    connection: Any,
    *,
    runbook: str | None = None,
    since: datetime | None = None,
    incident: str | None = None,
    limit: int | None = None,
) -> list[tuple[str, str]]:
    """``(record, path)`` of runs, newest first."""
    clauses, values = [], []
    if runbook is not None:
        clauses.append("runbook = ?")
        values.append(runbook)
    if incident is not None:
        clauses.append("incident_id = ?")
        values.append(incident)
    if since is not None:
        clauses.append("started_at >= ?")
        values.append(index_time(since))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    query = f"SELECT record, path FROM runs {where} ORDER BY started_at DESC, run_id DESC"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    return connection.execute(query, values).fetchall()


def select_run(connection: Any, id: str) -> tuple[str, str] | None:
    """A run by its id, or the newest run of the incident with that id."""
    return connection.execute(
        "SELECT record, path FROM runs WHERE run_id = ? OR incident_id = ? "
        "ORDER BY run_id = ? DESC, started_at DESC, run_id DESC LIMIT 1",
        (id, id, id),
    ).fetchone()


@dataclass(frozen=True, kw_only=True)
class IncidentFilter:
    """What :func:`select_incidents` narrows by; None means any."""

    incident_id: str | None = None
    runbook: str | None = None
    service: str | None = None
    severity: str | None = None
    status: str | None = (
        None  # firing | resolved (the incident) or succeeded | failed (its newest run)
    )
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    limit: int | None = None


def select_incidents(connection: Any, where: IncidentFilter) -> list[dict[str, Any]]:
    """Incidents newest first (by when they fired): their columns, aggregates and newest run.

    Each is a dict of the incident's fields plus ``newest_record`` and ``newest_path``.
    """
    clauses, values = _incident_clauses(where, dialect(connection))
    runs_of_i = "FROM runs WHERE runs.incident_id = i.incident_id"
    query = f"""
        SELECT i.incident_id, i.group_key, i.alert_name, i.starts_at, i.status, i.ended_at,
            (SELECT count(*) {runs_of_i}) AS run_count,
            (SELECT count(*) FROM notes WHERE notes.incident_id = i.incident_id) AS note_count,
            (SELECT CASE min({_SEVERITY_RANK_SQL}) WHEN 0 THEN 'critical' WHEN 1 THEN 'warning'
                ELSE 'info' END {runs_of_i}) AS severity,
            (SELECT {_RUNBOOKS_SQL[dialect(connection)]} {runs_of_i}) AS runbooks,
            {_NEWEST_RUN.format(column="record")} AS newest_record,
            {_NEWEST_RUN.format(column="path")} AS newest_path
        FROM incidents i
        {"WHERE " + " AND ".join(clauses) if clauses else ""}
        ORDER BY i.starts_at DESC, i.incident_id DESC
    """
    if where.limit is not None:
        query += f" LIMIT {int(where.limit)}"
    cursor = connection.execute(query, values)
    names = [column[0] for column in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["runbooks"] = sorted((row["runbooks"] or "").split(","))
    return rows


def _incident_clauses(where: IncidentFilter, speaks: str) -> tuple[list[str], list[Any]]:
    clauses: list[str] = ["EXISTS (SELECT 1 FROM runs WHERE runs.incident_id = i.incident_id)"]
    values: list[Any] = []

    def any_run(condition: str, value: Any) -> None:
        clauses.append(
            f"EXISTS (SELECT 1 FROM runs WHERE runs.incident_id = i.incident_id AND {condition})"
        )
        values.append(value)

    if where.incident_id is not None:
        clauses.append("i.incident_id = ?")
        values.append(where.incident_id)
    if where.runbook:
        any_run("runbook = ?", where.runbook)
    if where.service:
        any_run("service = ?", where.service)
    if where.severity:
        any_run("severity = ?", where.severity)
    if where.status in ("firing", "resolved"):
        clauses.append("i.status = ?")
        values.append(where.status)
    elif where.status:
        clauses.append(f"{_NEWEST_RUN.format(column='status')} = ?")
        values.append(where.status)
    if where.since is not None:
        clauses.append("i.starts_at >= ?")
        values.append(index_time(where.since))
    if where.until is not None:
        clauses.append("i.starts_at <= ?")
        values.append(index_time(where.until))
    if where.search and (match := search_clause(speaks, where.search)):
        clauses.append(match[0])
        values.append(match[1])
    return clauses, values


def select_notes(connection: Any, incident_id: str) -> list[tuple[str, ...]]:
    return connection.execute(
        "SELECT note_id, created_at, author, text FROM notes WHERE incident_id = ? "
        "ORDER BY created_at, note_id",
        (incident_id,),
    ).fetchall()


def select_values(connection: Any, column: str) -> list[str]:
    """The distinct values of a run column (runbook, service, severity), for filter menus."""
    if column not in ("runbook", "service", "severity", "status"):
        raise ValueError(f"not a filterable run column: {column}")
    rows = connection.execute(
        f"SELECT DISTINCT {column} FROM runs WHERE {column} IS NOT NULL ORDER BY {column}"
    )
    return [row[0] for row in rows]


def counts(connection: Any) -> dict[str, Any]:
    """How many incidents, runs (and pruned runs) and notes; the oldest and newest run."""
    row = connection.execute(
        "SELECT (SELECT count(*) FROM incidents), count(*), coalesce(sum(pruned), 0), "
        "min(started_at), max(started_at), (SELECT count(*) FROM notes) FROM runs"
    ).fetchone()
    keys = ("incidents", "runs", "pruned_runs", "oldest_run", "newest_run", "notes")
    return dict(zip(keys, row, strict=True))


def rebuild(
    connection: Any,
    runs: Iterable[tuple[RunRecord, list[Finding]]],
    notes: Iterable[Note],
    resolved: Sequence[tuple[str, datetime]],
    root: Path,
) -> int:
    """Drop every table and index what the folders hold; return how many runs."""
    drop_schema(connection)
    create_schema(connection)
    count = 0
    for record, findings in runs:
        insert_run(connection, record, findings, root)
        count += 1
    known = {row[0] for row in connection.execute("SELECT incident_id FROM incidents")}
    for note in notes:
        if note.incident_id in known:
            insert_note(connection, note)
    for incident_id, ended_at in resolved:
        set_resolved(connection, incident_id, ended_at)
    return count
