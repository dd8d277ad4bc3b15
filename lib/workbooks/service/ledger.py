"""Where the intake ledger lives: a SQLite file in the archive (the default) or PostgreSQL.

:mod:`workbooks.service.intake` decides; this module only opens transactions in which its
check-then-write steps are atomic. Both stores give it the same three things:

- ``transaction()``: a connection inside a transaction, rows read by column name, committed at
  the end or rolled back on an error, which reaches the caller as :class:`ArchiveError`;
- ``lock(db, key)``: within that transaction, one holder per key at a time (SQLite's
  ``BEGIN IMMEDIATE`` already holds the whole file; PostgreSQL takes an advisory lock on the
  key, so deliveries for different alert groups do not wait on each other);
- ``for_update``: what makes a ``SELECT`` of a run lock its row until commit (PostgreSQL), so
  two workers claiming one run are served one after the other and the second sees it taken.

A long-lived service that does not fork also calls ``keep_open()`` at its start and
``release()`` at its stop: SQLite's ledger then keeps one idle connection, which spares each
transaction the log's checkpoint at the last close; PostgreSQL's has nothing to add.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbooks.core.database import (
    LEDGER_SCHEMA,
    PostgresConnection,
    connect_postgres,
    database_label,
    use_wal,
)
from workbooks.core.errors import ArchiveError

# The ledger cannot be rebuilt from the archive (it is what the queue has not run yet), so a
# future change of its tables will be an upgrade in place, keyed on this number.
SCHEMA_VERSION = 1
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    task_id TEXT PRIMARY KEY, dedup_key TEXT NOT NULL, group_key TEXT NOT NULL,
    runbook TEXT NOT NULL, incident_id TEXT NOT NULL, fingerprints TEXT NOT NULL,
    payload TEXT NOT NULL, source TEXT NOT NULL, state TEXT NOT NULL,
    accepted_at REAL NOT NULL, claimed_at REAL, heartbeat_at REAL, owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, finished_at REAL, run_ids TEXT, error TEXT,
    closed INTEGER NOT NULL DEFAULT 0);  -- 1 once the group resolved: no longer dedups
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (dedup_key, accepted_at);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state);
CREATE INDEX IF NOT EXISTS runs_by_group ON runs (group_key, runbook);
CREATE TABLE IF NOT EXISTS resolutions (
    incident_id TEXT PRIMARY KEY, ended_at REAL NOT NULL, recorded_at REAL NOT NULL);
"""
# Times are epoch seconds: PostgreSQL's REAL is 4 bytes, too short for them.
_POSTGRES_SCHEMA = _SQLITE_SCHEMA.replace(" REAL", " DOUBLE PRECISION")


def create_tables(db: Any, dialect: str, *, label: str) -> None:
    """Create what is missing; refuse a ledger written by a newer version of the package."""
    for statement in (_POSTGRES_SCHEMA if dialect == "postgres" else _SQLITE_SCHEMA).split(";"):
        if statement.strip():
            db.execute(statement)
    version = db.execute("SELECT max(version) AS version FROM schema_version").fetchone()
    if version["version"] is None:
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif version["version"] > SCHEMA_VERSION:
        raise ArchiveError(
            f"the intake ledger {label} is of schema version {version['version']}, newer than "
            f"this package's ({SCHEMA_VERSION}): upgrade incident-workbooks on this host"
        )


class SqliteLedger:
    """``<archive>/intake.sqlite``: one short connection per transaction, any thread; a
    service also holds one idle connection while it runs (:meth:`keep_open`)."""

    dialect = "sqlite"
    for_update = ""

    def __init__(self, path: Path, *, busy_timeout_seconds: float) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self.label = str(path)
        self.kept: sqlite3.Connection | None = None

    def keep_open(self) -> None:
        """Hold one idle connection to the ledger until :meth:`release`, for a service.

        When the last connection to a WAL database closes, SQLite checkpoints the log into the
        file, syncs it and deletes the log: a short transaction that is the only one open paid
        that every time, about 1 ms where the same transaction costs 0.1 ms beside an open
        connection, and under an alert storm it held the write lock the next delivery waited
        for (``POST /alerts``: the ledger's part of it at p90 8-13 -> 0.7-1.0 ms;
        docs/performance.md). The held connection only reads once, to join the log; it holds
        no transaction, so checkpoints still run as the log grows.

        Only in a process that does not fork while it holds it: SQLite's locks do not cross a
        fork, and a forked child's connections would take the parent's locks for their own
        (so the service's thread workers, not its process workers).
        """
        if self.kept is not None:
            return
        try:
            kept = sqlite3.connect(self.path, check_same_thread=False)  # closed by `release`
        except sqlite3.Error:
            return  # an optimisation: each transaction still opens its own
        try:
            kept.execute("SELECT count(*) FROM schema_version").fetchone()
        except sqlite3.Error:
            kept.close()
            return
        self.kept = kept

    def release(self) -> None:
        """Close what :meth:`keep_open` held (the last close checkpoints the log)."""
        kept, self.kept = self.kept, None
        if kept is not None:
            kept.close()

    def lock(self, db: Any, key: str) -> None:
        """Nothing to add: ``BEGIN IMMEDIATE`` holds the file's write lock already."""

    def close(self) -> None:
        """Nothing held between transactions."""

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE``: the write lock up front, so check-then-insert is atomic."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout_seconds, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            raise ArchiveError(
                f"cannot open the intake ledger {self.path} ({exc}); check that the archive "
                "folder is writable"
            ) from exc
        try:
            connection.row_factory = sqlite3.Row
            use_wal(connection, self.busy_timeout_seconds)
            # WAL + NORMAL: durable across a process crash, which is what an accepted alert needs.
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise ArchiveError(
                f"the intake ledger {self.path} could not be updated ({exc}); if it is "
                "corrupt, stop the service and move it aside (accepted runs still queued are "
                "then run without de-duplication)"
            ) from exc
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()


class PostgresLedger:
    """The ledger in PostgreSQL (schema ``workbooks_ledger``), shared by every host.

    Each thread keeps one connection (opened on first use, in this process: a forked worker
    opens its own), so a claim costs a round trip, not a connection.
    """

    dialect = "postgres"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self.label = f"in the database {database_label(url)}"
        self.local = threading.local()
        self.inherited: list[PostgresConnection] = []

    def lock(self, db: PostgresConnection, key: str) -> None:
        db.lock(key)

    def connection(self) -> PostgresConnection:
        held = getattr(self.local, "connection", None)
        if held is not None and held[0] == os.getpid() and not held[1].closed:
            return held[1]
        if held is not None and held[0] != os.getpid():
            # A forked worker's copy of its parent's session: closing it, or letting it be
            # collected, would end the parent's session on the shared socket. Keep it, unused.
            self.inherited.append(held[1])
        try:
            connection = connect_postgres(self.url, schema=LEDGER_SCHEMA, rows="dict")
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open the intake ledger: {exc}") from None
        self.local.connection = (os.getpid(), connection)
        return connection

    @contextmanager
    def transaction(self) -> Iterator[PostgresConnection]:
        db = self.connection()
        try:
            db.execute("BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # The connection may be gone (a restarted server): the next call opens a new one.
            self.local.connection = None
            db.close()
            raise ArchiveError(
                f"the intake ledger {self.label} could not be updated ({exc}); check that "
                "PostgreSQL is up, then retry"
            ) from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def keep_open(self) -> None:
        """Nothing to add: each thread keeps its connection already."""

    def release(self) -> None:
        """Nothing held beyond each thread's connection."""

    def close(self) -> None:
        """Close this thread's connection (a thread that is done with the ledger)."""
        held = getattr(self.local, "connection", None)
        if held is not None and held[0] == os.getpid():
            held[1].close()
        self.local.connection = None
