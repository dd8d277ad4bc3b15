"""The index's tables in each dialect, its schema version, and opening a SQLite index.

The same tables live in SQLite (``<archive>/index.sqlite``, search by FTS5) or in PostgreSQL
(schema ``workbooks_index``, search by a ``tsvector`` column): see :mod:`workbooks.archive.index`
for what each holds. Which dialect a connection speaks is :func:`dialect`; a
:class:`~workbooks.core.database.PostgresConnection` says ``postgres``, sqlite3's says nothing.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbooks.core.database import use_wal

SCHEMA_VERSION = 2
TABLES = ("search", "notes", "findings", "runs", "incidents", "schema_version")
_SQLITE_SCHEMA = """
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
# The same tables for PostgreSQL: text compared byte by byte (COLLATE "C") so that ids and the
# fixed-width times sort as in SQLite, doubles for SQLite's REAL, no foreign keys enforced (SQLite
# does not enforce them either, and a rebuild inserts runs before their notes), and search as a
# tsvector of the words SQLite's FTS5 would see (index_search.search_words).
_POSTGRES_SCHEMA = (
    _SQLITE_SCHEMA.split("CREATE VIRTUAL TABLE")[0]
    .replace(" REFERENCES incidents (incident_id)", "")
    .replace(" REFERENCES runs (run_id)", "")
    .replace(" TEXT", ' TEXT COLLATE "C"')
    .replace(" REAL", " DOUBLE PRECISION")
    + """
CREATE TABLE IF NOT EXISTS search (
    incident_id TEXT COLLATE "C" NOT NULL, owner TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL, text TEXT NOT NULL, words TSVECTOR NOT NULL);
CREATE INDEX IF NOT EXISTS search_by_words ON search USING GIN (words);
CREATE INDEX IF NOT EXISTS search_by_owner ON search (owner);
CREATE INDEX IF NOT EXISTS search_by_incident ON search (incident_id);
"""
)


class OldSchemaError(sqlite3.DatabaseError):
    """The index was written by an older version of this package: rebuild it."""


def dialect(connection: Any) -> str:
    """``sqlite`` or ``postgres``: which SQL the connection speaks."""
    return getattr(connection, "dialect", "sqlite")


def index_time(moment: datetime) -> str:
    # Fixed width, so that text order is time order in SQL (strftime's %Y does not pad year 2).
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}Z"


def parse_index_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def connect(path: Path, *, timeout: float, create: bool = True) -> sqlite3.Connection:
    """A SQLite connection in autocommit mode (transactions are explicit), schema checked.

    Raises :class:`OldSchemaError` for an index of an older schema, ``sqlite3.DatabaseError``
    for one of a newer schema. ``create=False`` skips both: for rebuilding.
    """
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        if not create:
            return connection
        # WAL lets readers go on while one process writes; it persists in the file.
        check_schema(connection, before_create=lambda: use_wal(connection, timeout))
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def check_schema(connection: Any, *, before_create: Any = None) -> None:
    """Create the tables in an empty index; raise for one of another schema version."""
    version = schema_version(connection)
    if version is None:
        if before_create is not None:
            before_create()
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


def schema_version(connection: Any) -> int | None:
    if dialect(connection) == "postgres":
        found = connection.execute("SELECT to_regclass('schema_version')").fetchone()
        if found[0] is None:
            return None
        return connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    try:
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return row[0]


def rollback(connection: Any) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def create_schema(connection: Any) -> None:
    schema = _POSTGRES_SCHEMA if dialect(connection) == "postgres" else _SQLITE_SCHEMA
    for statement in schema.split(";"):
        if statement.strip():
            connection.execute(statement)
    if connection.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def drop_schema(connection: Any) -> None:
    for table in TABLES:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
