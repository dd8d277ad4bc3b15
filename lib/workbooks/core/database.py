"""PostgreSQL for the archive index and the intake ledger, when ``database:`` names one.

The default is SQLite in the archive folder and needs no service; with
``WORKBOOKS_DATABASE_URL=postgresql://...`` both live in that database instead, each in a schema
of its own (``workbooks_index``, ``workbooks_ledger``), so several hosts share them.

:class:`PostgresConnection` lets the SQL written for sqlite3 run on psycopg: ``?`` marks become
``%s``, ``BEGIN IMMEDIATE`` becomes a transaction holding the schema's advisory lock (the one
writer at a time SQLite gives), and driver errors reach callers as :class:`DatabaseError`, a
``sqlite3.DatabaseError``, so the callers that already word index errors word these too. Its
text never holds the password: the URL is only ever shown through :func:`database_label`.

psycopg is imported here only when a PostgreSQL URL is used.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from workbooks.core.errors import ConfigError

SCHEMES = ("postgresql", "postgres")
INDEX_SCHEMA = "workbooks_index"
LEDGER_SCHEMA = "workbooks_ledger"
CONNECT_TIMEOUT_SECONDS = 10


class DatabaseError(sqlite3.DatabaseError):
    """A PostgreSQL error, its text free of the password (a ``sqlite3.DatabaseError`` so the
    index's callers, written for SQLite, catch it unchanged)."""


def is_database_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in SCHEMES


def check_database_url(url: str) -> str:
    """``url`` if it names a PostgreSQL database; ConfigError (without the URL) if not."""
    if not is_database_url(url):
        raise ConfigError(
            "the database setting must be a PostgreSQL URL such as "
            "postgresql://workbooks@db.example:5432/workbooks (the password in "
            "PGPASSWORD or the URL); leave it unset to keep the index in the archive folder"
        )
    return url


def database_label(url: str) -> str:
    """``postgresql://db.example:5432/workbooks``: host, port and database, no user, no password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (plain or %-encoded) and any ``password=...`` removed."""
    password = urlsplit(url).password
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(str(secret), "***")
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.IGNORECASE)


class PostgresConnection:
    """A psycopg connection that speaks the sqlite3 subset the index and ledger use."""

    dialect = "postgres"

    def __init__(self, raw: Any, *, url: str, schema: str) -> None:
        self.raw = raw
        self.url = url
        self.schema = schema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        import psycopg

        try:
            if sql.strip().upper() == "BEGIN IMMEDIATE":
                self.raw.execute("BEGIN")
                return self.lock()
            if params:
                # psycopg reads % as a placeholder once there are parameters; SQLite stores a
                # bool as 0 or 1 in an INTEGER column, PostgreSQL would refuse it.
                values = tuple(int(v) if isinstance(v, bool) else v for v in params)
                return self.raw.execute(sql.replace("%", "%%").replace("?", "%s"), values)
            return self.raw.execute(sql)
        except psycopg.Error as exc:
            raise DatabaseError(self.describe(exc)) from None

    def lock(self, key: str = "") -> Any:
        """Hold the advisory lock named ``schema/key`` until this transaction ends."""
        return self.raw.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}/{key}",)
        )

    def describe(self, exc: BaseException) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return scrub(first, self.url)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        # UNKNOWN (a lost connection) is no transaction to roll back.
        status = self.raw.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    def close(self) -> None:
        self.raw.close()


def connect_postgres(url: str, *, schema: str, rows: str = "tuple") -> PostgresConnection:
    """An autocommit connection whose tables are those of ``schema`` (created if missing).

    ``rows="dict"`` gives rows read by column name. A database that cannot be reached raises
    :class:`DatabaseError` naming the host, never the password, and what to check.
    """
    try:
        import psycopg
        from psycopg.rows import dict_row, tuple_row
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        raise DatabaseError("psycopg is not installed: pip install 'psycopg[binary]'") from exc
    check_database_url(url)
    try:
        raw = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            row_factory=dict_row if rows == "dict" else tuple_row,
            application_name="incident-workbooks",
        )
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise DatabaseError(
            f"cannot connect to the database {database_label(url)} ({reason}); check that "
            "PostgreSQL runs there and accepts this user, or unset WORKBOOKS_DATABASE_URL "
            "(`database:` in the config) to keep the index and ledger in the archive folder"
        ) from None
    connection = PostgresConnection(raw, url=url, schema=schema)
    try:
        cursor = raw.cursor(row_factory=tuple_row)
        if cursor.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone()[0] is None:
            connection.execute("BEGIN IMMEDIATE")  # two hosts starting at once: one creates it
            connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            connection.execute("COMMIT")
        connection.execute(f'SET search_path TO "{schema}"')
    except BaseException:
        raw.close()
        raise
    return connection


def use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put a SQLite file in WAL mode, which then persists in it.

    Processes that open a new file at the same moment ask for the switch at once, and SQLite
    refuses it to all but one with "database is locked" without waiting (its busy timeout does
    not apply where waiting could deadlock): 25 of 100 trials of 6 processes on a new ledger.
    So the mode is read first, and the switch retried until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
