"""Opening the archive's index: schema checks, rebuild of an old one, and read-only mounts.

:class:`IndexFile` hands out connections to ``<archive>/index.sqlite``: a write transaction, or a
connection for reading that still works where the archive is mounted read-only (SQLite cannot
create the WAL's shared-memory file there, so the file is then opened immutable). An index of an
older schema is rebuilt from the folders (the ``rebuild`` callback) the first time it is opened.
:class:`PostgresIndex` does the same for an index in PostgreSQL; :func:`open_index` picks one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbooks.archive import index
from workbooks.core.config import configured_database
from workbooks.core.database import (
    INDEX_SCHEMA,
    PostgresConnection,
    connect_postgres,
    database_label,
    use_wal,
)
from workbooks.core.errors import ArchiveError


def open_index(
    path: Path, *, timeout: float, rebuild: Callable[[], object], database: str | None = None
) -> IndexFile | PostgresIndex:
    """The index of the archive whose index file would be ``path``: in PostgreSQL when
    ``database`` (else WORKBOOKS_DATABASE_URL, else the config's ``database:``) names one."""
    url = database or configured_database()
    if url:
        return PostgresIndex(url, rebuild=rebuild)
    return IndexFile(path, timeout=timeout, rebuild=rebuild)


class IndexFile:
    """Connections to one index file; ``rebuild`` rebuilds it from the folders."""

    def __init__(self, path: Path, *, timeout: float, rebuild: Callable[[], object]) -> None:
        self.path = path
        self.timeout = timeout
        self.rebuild = rebuild
        self.label = str(path)

    def exists(self) -> bool:
        """Whether there is an index to read (else the archive has never indexed a run)."""
        return self.path.exists()

    def connect(self, *, check_schema: bool = True) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not check_schema:
            connection = index.connect(self.path, timeout=self.timeout, create=False)
            use_wal(connection, self.timeout)
            return connection
        try:
            return index.connect(self.path, timeout=self.timeout)
        except index.OldSchemaError:
            # The index is derived: an older one is rebuilt from the folders, not migrated.
            self.rebuild()
            return index.connect(self.path, timeout=self.timeout)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading; on a read-only archive, an immutable one."""
        try:
            connection = self.connect()
        except (sqlite3.Error, ArchiveError, OSError) as exc:
            try:
                if self.writable():
                    raise
                connection = self.connect_read_only()
            except (sqlite3.Error, ArchiveError, OSError):
                raise ArchiveError(
                    f"cannot read the index {self.path} ({exc}); `workbook reindex` rebuilds it"
                ) from exc
        try:
            yield connection
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index {self.path}: {exc}") from exc
        finally:
            connection.close()

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; sqlite3 errors are the caller's to word."""
        connection = self.connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        finally:
            index.rollback(connection)
            connection.close()

    def writable(self) -> bool:
        return os.access(self.path.parent, os.W_OK) and (
            not self.path.exists() or os.access(self.path, os.W_OK)
        )

    def connect_read_only(self) -> sqlite3.Connection:
        """A connection that never writes, for an index on a read-only mount."""
        if not self.path.is_file():
            raise sqlite3.OperationalError(f"no index at {self.path}")
        uri = f"{self.path.as_uri()}?mode=ro&immutable=1"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            version = index.schema_version(connection)
            if version != index.SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"index schema version {version}, this package reads "
                    f"{index.SCHEMA_VERSION}; rebuild it with `workbook reindex` where the "
                    "archive is writable"
                )
        except sqlite3.Error:
            connection.close()
            raise
        return connection


class PostgresIndex:
    """Connections to the index in PostgreSQL (schema ``workbooks_index``), as :class:`IndexFile`.

    Every connection's errors are ``sqlite3.DatabaseError`` without the password
    (:class:`~workbooks.core.database.DatabaseError`), so the archive words them unchanged.
    """

    def __init__(self, url: str, *, rebuild: Callable[[], object]) -> None:
        self.url = url
        self.rebuild = rebuild
        self.label = f"in the database {database_label(url)}"

    def exists(self) -> bool:
        return True  # the tables are created on first use; an empty index lists nothing

    def connect(self, *, check_schema: bool = True) -> PostgresConnection:
        connection = connect_postgres(self.url, schema=INDEX_SCHEMA)
        if not check_schema:
            return connection
        try:
            index.check_schema(connection)
        except index.OldSchemaError:
            connection.close()
            self.rebuild()  # derived, as in SQLite: rebuilt from the folders, not migrated
            return self.connect()
        except BaseException:
            connection.close()
            raise
        return connection

    @contextmanager
    def reading(self) -> Iterator[PostgresConnection]:
        try:
            connection = self.connect()
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index: {exc}") from None
        try:
            yield connection
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index {self.label}: {exc}") from None
        finally:
            connection.close()

    @contextmanager
    def writing(self) -> Iterator[PostgresConnection]:
        """A write transaction holding the index's lock, one writer at a time as in SQLite."""
        connection = self.connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        finally:
            if not connection.closed:
                index.rollback(connection)
            connection.close()

    def writable(self) -> bool:
        return True
