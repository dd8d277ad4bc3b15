"""The archive's SQLite index: what list, search and the web pages read instead of the folders.

The folders are the truth (``workbooks.archive.store``); everything here is derived from them and
can
be dropped and rebuilt (``Archive.reindex``). An index of an older schema version is rebuilt
the first time it is opened. Tables:

==================  ==========================================================================
``incidents``       one row per incident: alert, start, status (firing or resolved), end
``runs``            one row per run, with its ``run.json`` as indexed
``findings``        the findings of each run, most important first
``notes``           the actions taken, from each incident's ``notes.jsonl``
``search``          FTS5 over alert labels, finding titles and notes, for free-text search
==================  ==========================================================================

Times are stored as fixed-width UTC text, so that text order is time order in SQL. This module
speaks SQL only; :mod:`workbooks.archive.store` turns rows into records and errors into messages.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbooks.core.findings import SEVERITIES, Finding

if TYPE_CHECKING:
    from workbooks.archive.records import Note, RunRecord

SCHEMA_VERSION = 2
_TABLES = ("search", "notes", "findings", "runs", "incidents", "schema_version")
_RUN_COLUMNS = {
    *("run_id", "incident_id", "runbook", "status", "duration_seconds", "source", "alert_name"),
    *("severity", "service", "top_finding_title", "top_finding_severity"),
}
_FINDING_COLUMNS = (
    *("severity", "title", "detail", "metric", "observed", "baseline", "unit"),
    *("recommendation", "likely_cause"),
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY, group_key TEXT NOT NULL, alert_name TEXT NOT NULL,
    starts_at TEXT NOT NULL,  -- when the alert fired (the first run's start if unknown)
    status TEXT NOT NULL DEFAULT 'firing',  -- firing | resolved
    ended_at TEXT);
CREATE INDEX IF NOT EXISTS incidents_by_start ON incidents (starts_at);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
    runbook TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL, duration_seconds REAL NOT NULL, source TEXT NOT NULL,
    alert_name TEXT NOT NULL, severity TEXT NOT NULL, service TEXT, error_kind TEXT,
    top_finding_title TEXT, top_finding_severity TEXT, critical_count INTEGER NOT NULL,
    warning_count INTEGER NOT NULL, info_count INTEGER NOT NULL,
    pruned INTEGER NOT NULL DEFAULT 0,  -- notebook and evidence deleted, findings kept
    path TEXT NOT NULL,  -- relative to the archive root, which may move
    record TEXT NOT NULL);  -- run.json as it was indexed
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_incident ON runs (incident_id, started_at);
CREATE TABLE IF NOT EXISTS findings (
    run_id TEXT NOT NULL REFERENCES runs (run_id), position INTEGER NOT NULL,
    severity TEXT NOT NULL, title TEXT NOT NULL, detail TEXT NOT NULL, subject TEXT NOT NULL,
    metric TEXT, observed REAL, baseline REAL, unit TEXT, recommendation TEXT,
    likely_cause INTEGER NOT NULL, PRIMARY KEY (run_id, position));
CREATE TABLE IF NOT EXISTS notes (
    note_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
    created_at TEXT NOT NULL, author TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notes_by_incident ON notes (incident_id, created_at);
CREATE VIRTUAL TABLE IF NOT EXISTS search USING fts5 (
    incident_id UNINDEXED, owner UNINDEXED, kind UNINDEXED, text);
"""
# The newest run of an incident, as a correlated sub-query on ``i``.
_NEWEST_RUN = (
    "(SELECT {column} FROM runs WHERE runs.incident_id = i.incident_id "
    "ORDER BY started_at DESC, run_id DESC LIMIT 1)"
)
_SEVERITY_RANK_SQL = "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"


class OldSchemaError(sqlite3.DatabaseError):
    """The index was written by an older version of this package: rebuild it."""


def index_time(moment: datetime) -> str:
    # Fixed width, so that text order is time order in SQL (strftime's %Y does not pad year 2).
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}Z"


def parse_index_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def connect(path: Path, *, timeout: float, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), schema checked.

    Raises :class:`OldSchemaError` for an index of an older schema, ``sqlite3.DatabaseError``
    for one of a newer schema. ``create=False`` skips both: for rebuilding.
    """
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        if not create:
            return connection
        version = schema_version(connection)
        if version is None:
            # WAL lets readers go on while one process writes; it persists in the file.
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("BEGIN IMMEDIATE")
            create_schema(connection)
            connection.execute("COMMIT")
            version = schema_version(connection)
        if version is not None and version < SCHEMA_VERSION:
            raise OldSchemaError(f"index schema version {version}, rebuilding for {SCHEMA_VERSION}")
        if version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"index schema version {version} is newer than this package's ({SCHEMA_VERSION}); "
                "upgrade incident-workbooks, or rebuild it for this version"
            )
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def schema_version(connection: sqlite3.Connection) -> int | None:
    try:
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return row[0]


def rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def create_schema(connection: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    if connection.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def drop_schema(connection: sqlite3.Connection) -> None:
    for table in _TABLES:
        connection.execute(f"DROP TABLE IF EXISTS {table}")


# -- writing -------------------------------------------------------------------------------------


def insert_run(
    connection: sqlite3.Connection, record: RunRecord, findings: list[Finding], root: Path
) -> None:
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


def insert_note(connection: sqlite3.Connection, note: Note) -> None:
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


def set_resolved(connection: sqlite3.Connection, incident_id: str, ended_at: datetime) -> bool:
    cursor = connection.execute(
        "UPDATE incidents SET status = 'resolved', ended_at = ? WHERE incident_id = ?",
        (index_time(ended_at), incident_id),
    )
    return cursor.rowcount > 0


def delete_run(connection: sqlite3.Connection, run_id: str) -> None:
    connection.execute("DELETE FROM findings WHERE run_id = ?", (run_id,))
    connection.execute("DELETE FROM search WHERE owner = ?", (run_id,))
    connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def delete_incident(connection: sqlite3.Connection, incident_id: str) -> None:
    for table in ("search", "notes", "incidents"):
        connection.execute(f"DELETE FROM {table} WHERE incident_id = ?", (incident_id,))


def _searchable(
    connection: sqlite3.Connection, incident_id: str, owner: str, kind: str, text: str
) -> None:
    connection.execute(
        "INSERT INTO search (incident_id, owner, kind, text) VALUES (?, ?, ?, ?)",
        (incident_id, owner, kind, text),
    )


def _insert(
    connection: sqlite3.Connection, table: str, row: dict[str, Any], *, conflict: str = "REPLACE"
) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    connection.execute(
        f"INSERT OR {conflict} INTO {table} ({columns}) VALUES ({marks})", tuple(row.values())
    )


# -- reading -------------------------------------------------------------------------------------


def select_runs(
    connection: sqlite3.Connection,
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


def select_run(connection: sqlite3.Connection, id: str) -> tuple[str, str] | None:
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


def select_incidents(connection: sqlite3.Connection, where: IncidentFilter) -> list[dict[str, Any]]:
    """Incidents newest first (by when they fired): their columns, aggregates and newest run.

    Each is a dict of the incident's fields plus ``newest_record`` and ``newest_path``.
    """
    clauses, values = _incident_clauses(where)
    runs_of_i = "FROM runs WHERE runs.incident_id = i.incident_id"
    query = f"""
        SELECT i.incident_id, i.group_key, i.alert_name, i.starts_at, i.status, i.ended_at,
            (SELECT count(*) {runs_of_i}) AS run_count,
            (SELECT count(*) FROM notes WHERE notes.incident_id = i.incident_id) AS note_count,
            (SELECT CASE min({_SEVERITY_RANK_SQL}) WHEN 0 THEN 'critical' WHEN 1 THEN 'warning'
                ELSE 'info' END {runs_of_i}) AS severity,
            (SELECT group_concat(DISTINCT runbook) {runs_of_i}) AS runbooks,
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


def _incident_clauses(where: IncidentFilter) -> tuple[list[str], list[Any]]:
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
    if where.search and (match := fts_query(where.search)):
        clauses.append("i.incident_id IN (SELECT incident_id FROM search WHERE search MATCH ?)")
        values.append(match)
    return clauses, values


def fts_query(text: str) -> str:
    """Free text as an FTS5 query that cannot be a syntax error: every word a quoted prefix.

    ``inference-api <script>`` becomes ``"inference-api"* AND "<script>"*``; FTS5 tokenizes
    inside the quotes, so a word with punctuation matches its parts in sequence.
    """
    words = [word for word in re.split(r"\s+", text.strip()) if re.search(r"\w", word)]
    return " AND ".join('"' + word.replace('"', '""') + '"*' for word in words)


def select_notes(connection: sqlite3.Connection, incident_id: str) -> list[tuple[str, ...]]:
    return connection.execute(
        "SELECT note_id, created_at, author, text FROM notes WHERE incident_id = ? "
        "ORDER BY created_at, note_id",
        (incident_id,),
    ).fetchall()


def select_values(connection: sqlite3.Connection, column: str) -> list[str]:
    """The distinct values of a run column (runbook, service, severity), for filter menus."""
    if column not in ("runbook", "service", "severity", "status"):
        raise ValueError(f"not a filterable run column: {column}")
    rows = connection.execute(
        f"SELECT DISTINCT {column} FROM runs WHERE {column} IS NOT NULL ORDER BY {column}"
    )
    return [row[0] for row in rows]


def counts(connection: sqlite3.Connection) -> dict[str, Any]:
    """How many incidents, runs (and pruned runs) and notes; the oldest and newest run."""
    row = connection.execute(
        "SELECT (SELECT count(*) FROM incidents), count(*), coalesce(sum(pruned), 0), "
        "min(started_at), max(started_at), (SELECT count(*) FROM notes) FROM runs"
    ).fetchone()
    keys = ("incidents", "runs", "pruned_runs", "oldest_run", "newest_run", "notes")
    return dict(zip(keys, row, strict=True))


def rebuild(
    connection: sqlite3.Connection,
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
