"""The archive: one folder per incident, one sub-folder per run, and a SQLite index over them.

::

    <root>/index.sqlite
    <root>/<incident_id>/<run_id>/workbook.ipynb   the executed notebook
                                 findings.json     {"incident", "runbook", "status", ...}
                                 alert.json        the webhook payload
                                 run.json          the :class:`RunRecord`
                                 evidence/         what the notebook saved
    <root>/.staging/<uuid>/                        runs being built

A run is built in a staging folder and moved into place with one ``os.rename``, so a run folder
is either whole or absent. The folders are the truth; the index is derived from them (``reindex``
rebuilds it), so a crash between the rename and the index write loses nothing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbooks.errors import ArchiveError, RunNotFoundError
from workbooks.findings import SEVERITIES, Finding, ranked

SCHEMA_VERSION = 1
INDEX_FILE = "index.sqlite"
STAGING_DIR = ".staging"
RUN_FILE = "run.json"
FINDINGS_FILE = "findings.json"
ALERT_FILE = "alert.json"
NOTEBOOK_FILE = "workbook.ipynb"
EVIDENCE_DIR = "evidence"

_RUN_COLUMNS = {
    *("run_id", "incident_id", "runbook", "status", "duration_seconds", "source", "alert_name"),
    *("severity", "service", "top_finding_title", "top_finding_severity"),
}
_FINDING_COLUMNS = (
    *("severity", "title", "detail", "metric", "observed", "baseline", "unit"),
    *("recommendation", "likely_cause"),
)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY, group_key TEXT NOT NULL, alert_name TEXT NOT NULL,
    starts_at TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, incident_id TEXT NOT NULL REFERENCES incidents (incident_id),
    runbook TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL, duration_seconds REAL NOT NULL, source TEXT NOT NULL,
    alert_name TEXT NOT NULL, severity TEXT NOT NULL, service TEXT, error_kind TEXT,
    top_finding_title TEXT, top_finding_severity TEXT, critical_count INTEGER NOT NULL,
    warning_count INTEGER NOT NULL, info_count INTEGER NOT NULL,
    path TEXT NOT NULL,  -- relative to the archive root, which may move
    record TEXT NOT NULL);  -- run.json as it was indexed
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_incident ON runs (incident_id, started_at);
CREATE TABLE IF NOT EXISTS findings (
    run_id TEXT NOT NULL REFERENCES runs (run_id), position INTEGER NOT NULL,
    severity TEXT NOT NULL, title TEXT NOT NULL, detail TEXT NOT NULL, subject TEXT NOT NULL,
    metric TEXT, observed REAL, baseline REAL, unit TEXT, recommendation TEXT,
    likely_cause INTEGER NOT NULL, PRIMARY KEY (run_id, position));
"""


def package_version() -> str:
    try:
        return metadata.version("incident-workbooks")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def slug(text: str, *, max_length: int = 40) -> str:
    """``text`` reduced to ``[a-z0-9-]``: safe as a path component whatever it held."""
    reduced = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return reduced[:max_length].strip("-") or "alert"


def incident_id(group_key: str, starts_at: datetime, alertname: str) -> str:
    """``20261128T1405Z-highlatency-3f9a2c1b``: the same for the same group and start time."""
    moment = starts_at.astimezone(UTC)
    digest = hashlib.sha256((group_key + moment.isoformat()).encode("utf-8")).hexdigest()[:8]
    return f"{moment:%Y%m%dT%H%MZ}-{slug(alertname)}-{digest}"


class RunRecord(BaseModel):
    """What ``run.json`` holds, and what listings show without opening a notebook.

    ``error`` is None or ``{kind, ename, evalue, cell_index, message}`` with kind one of
    ``exception``, ``cell-timeout``, ``run-timeout``, ``dead-kernel``, ``internal``.
    ``run_id`` and ``path`` are assigned by :meth:`Archive.commit`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    run_id: str = ""
    incident_id: str
    runbook: str
    runbook_hash: str
    package_version: str = Field(default_factory=package_version)
    status: Literal["succeeded", "failed"]
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    source: str
    alert_name: str
    severity: str
    service: str | None = None
    alert_status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    path: Path = Path()
    group_key: str = ""
    alert_starts_at: datetime | None = None
    lookback: str = "2h"
    baseline: str = "1d"
    top_finding_title: str | None = None
    top_finding_severity: str | None = None
    finding_counts: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))

    def with_findings(self, findings: Iterable[Finding]) -> RunRecord:
        """A copy carrying the top finding and the counts per severity."""
        ordered = ranked(findings)
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in ordered:
            counts[finding.severity] += 1
        top = ordered[0] if ordered else None
        return self.model_copy(
            update={
                "top_finding_title": top.title if top else None,
                "top_finding_severity": top.severity if top else None,
                "finding_counts": counts,
            }
        )


def _index_time(moment: datetime) -> str:
    # Fixed width, so that text order is time order in SQL.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_id(value: str, what: str) -> str:
    if not _SAFE_ID.match(value):
        raise ArchiveError(f"{what} {value!r} is not a valid id (letters, digits, '.', '_', '-')")
    return value


class Archive:
    """Run folders under ``root`` plus the index; safe for several processes writing at once."""

    def __init__(self, root: str | Path, *, busy_timeout_seconds: float = 30.0) -> None:
        self.root = Path(root).absolute()
        self.index_path = self.root / INDEX_FILE
        self.busy_timeout_seconds = busy_timeout_seconds

    def __repr__(self) -> str:
        return f"Archive({str(self.root)!r})"

    # -- building runs ---------------------------------------------------------------------------

    def stage(self) -> Path:
        """A new, empty staging folder for one run."""
        staging = self.root / STAGING_DIR / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create a staging folder in {self.root}: {exc}") from exc
        return staging

    def discard(self, staging: Path) -> None:
        shutil.rmtree(self._staging_folder(staging), ignore_errors=True)

    def clean_staging(self, *, older_than: timedelta = timedelta(hours=1)) -> list[Path]:
        """Remove staging folders left by runs that died; young ones may belong to live runs."""
        cutoff = time.time() - older_than.total_seconds()
        removed = []
        staging_root = self.root / STAGING_DIR
        for folder in sorted(staging_root.iterdir()) if staging_root.is_dir() else []:
            if folder.is_dir() and folder.stat().st_mtime <= cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def commit(self, staging: Path, record: RunRecord) -> RunRecord:
        """Move a staged run into place and index it; return the record with its id and path.

        The index's write lock is taken before the run id is chosen, so cooperating writers never
        pick the same id. If the index cannot be written, the run folder is kept all the same
        and :class:`ArchiveError` says how to rebuild the index.
        """
        staging = self._staging_folder(staging)
        incident_dir = self.root / _check_id(record.incident_id, "incident")
        findings = _read_findings(staging)
        connection: sqlite3.Connection | None = None
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            # The run is kept all the same; the id is then unique by the folders alone.
            final = self._move_into_place(staging, record, incident_dir, None)
            raise self._index_failed(final, exc) from exc
        try:
            # Under the write lock: no cooperating writer can take the same run id meanwhile.
            final = self._move_into_place(staging, record, incident_dir, connection)
            _insert_run(connection, final, findings, self.root)
            connection.execute("COMMIT")
            return final
        except sqlite3.Error as exc:
            _rollback(connection)
            raise self._index_failed(final, exc) from exc
        finally:
            connection.close()

    def _index_failed(self, record: RunRecord, exc: sqlite3.Error) -> ArchiveError:
        return ArchiveError(
            f"the run is archived in {record.path} but the index {self.index_path} could not be "
            f"updated ({exc}); run `workbook reindex` to rebuild it from the folders"
        )

    def _move_into_place(
        self,
        staging: Path,
        record: RunRecord,
        incident_dir: Path,
        connection: sqlite3.Connection | None,
    ) -> RunRecord:
        incident_dir.mkdir(parents=True, exist_ok=True)
        base = f"{record.started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{slug(record.runbook)}"
        for attempt in range(1, 1000):
            run_id = base if attempt == 1 else f"{base}-{attempt}"
            if self._run_id_taken(run_id, connection):
                continue
            final = record.model_copy(update={"run_id": run_id, "path": incident_dir / run_id})
            (staging / RUN_FILE).write_text(_dump(final), encoding="utf-8")
            try:
                # Atomic on one filesystem; refuses a non-empty target, so a lost race retries.
                os.rename(staging, final.path)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise ArchiveError(f"cannot move the run into {final.path}: {exc}") from exc
            return final
        raise ArchiveError(f"too many runs named {base} in {incident_dir}")

    def _run_id_taken(self, run_id: str, connection: sqlite3.Connection | None) -> bool:
        if connection is not None:
            with suppress(sqlite3.Error):  # then the folders alone decide
                query = "SELECT 1 FROM runs WHERE run_id = ?"
                if connection.execute(query, (run_id,)).fetchone() is not None:
                    return True
        return any(self.root.glob(f"*/{run_id}"))

    def _staging_folder(self, staging: Path) -> Path:
        staging = Path(staging).absolute()
        if staging.parent != self.root / STAGING_DIR or not staging.is_dir():
            raise ArchiveError(f"{staging} is not a staging folder of {self}")
        return staging

    # -- reading ---------------------------------------------------------------------------------

    def runs(
        self,
        *,
        runbook: str | None = None,
        since: timedelta | None = None,
        incident: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs newest first, from the index alone."""
        if not self.index_path.exists():
            return []
        clauses, values = [], []
        if runbook is not None:
            clauses.append("runbook = ?")
            values.append(runbook)
        if incident is not None:
            clauses.append("incident_id = ?")
            values.append(incident)
        if since is not None:
            clauses.append("started_at >= ?")
            values.append(_index_time(datetime.now(UTC) - since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT record, path FROM runs {where} ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._reading() as connection:
            rows = connection.execute(query, values).fetchall()
        return [self._record_from_row(record, path) for record, path in rows]

    def get(self, id: str) -> RunRecord:
        """A run by run id, or an incident id meaning its newest run."""
        if self.index_path.exists():
            with self._reading() as connection:
                row = connection.execute(
                    "SELECT record, path FROM runs WHERE run_id = ? OR incident_id = ? "
                    "ORDER BY run_id = ? DESC, started_at DESC, run_id DESC LIMIT 1",
                    (id, id, id),
                ).fetchone()
            if row is not None:
                return self._record_from_row(*row)
        # Not indexed (a crash before the index write, or no index yet): look at the folders.
        if _SAFE_ID.match(id):
            candidates = [*self.root.glob(f"*/{id}/{RUN_FILE}")]
            candidates = candidates or sorted((self.root / id).glob(f"*/{RUN_FILE}"))[-1:]
            candidates = [path for path in candidates if not path.parts[-3].startswith(".")]
            if candidates:
                return _read_record(candidates[0].parent)
        raise RunNotFoundError(
            f"no run or incident {id!r} in the archive {self.root}; `workbook list` shows the "
            "run ids and incident ids (or pass --archive DIR if it lives elsewhere)"
        )

    def findings(self, run: RunRecord) -> list[Finding]:
        return [Finding.from_dict(item) for item in self._findings_document(run)["findings"]]

    def show(self, id: str) -> dict[str, Any]:
        """The findings.json object of a run (or of an incident's newest run)."""
        return self._findings_document(self.get(id))

    def _findings_document(self, run: RunRecord) -> dict[str, Any]:
        path = run.path / FINDINGS_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"cannot read {path}: {exc}") from exc

    def _record_from_row(self, record: str, path: str) -> RunRecord:
        return RunRecord.model_validate_json(record).model_copy(update={"path": self.root / path})

    # -- the index -------------------------------------------------------------------------------

    def reindex(self) -> int:
        """Rebuild the index from the run folders; return how many runs it holds."""
        try:
            # No schema check: rebuilding is how an index of another schema version is replaced.
            connection = self._connect(check_schema=False)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open the index {self.index_path}: {exc}") from exc
        try:
            connection.execute("BEGIN IMMEDIATE")
            for table in ("findings", "runs", "incidents", "schema_version"):
                connection.execute(f"DROP TABLE IF EXISTS {table}")
            _create_schema(connection)
            count = 0
            for run_file in sorted(self.root.glob(f"[!.]*/*/{RUN_FILE}")):
                try:
                    record = _read_record(run_file.parent)
                except ArchiveError:
                    continue  # a folder someone put here by hand: not ours to index
                _insert_run(connection, record, _read_findings(run_file.parent), self.root)
                count += 1
            connection.execute("COMMIT")
            return count
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot rebuild the index {self.index_path}: {exc}") from exc
        finally:
            _rollback(connection)
            connection.close()

    def _connect(self, *, check_schema: bool = True) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.index_path, timeout=self.busy_timeout_seconds, isolation_level=None
        )
        try:
            version = _schema_version(connection) if check_schema else None
            if version is None:
                # WAL lets readers go on while one process writes; it persists in the file.
                connection.execute("PRAGMA journal_mode = WAL")
            if version is None and check_schema:
                connection.execute("BEGIN IMMEDIATE")
                _create_schema(connection)
                connection.execute("COMMIT")
                version = _schema_version(connection)
            if check_schema and version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"index schema version {version}, this package expects {SCHEMA_VERSION}"
                )
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = self._connect()
        except sqlite3.Error as exc:
            raise ArchiveError(
                f"cannot read the index {self.index_path} ({exc}); `workbook reindex` rebuilds it"
            ) from exc
        try:
            yield connection
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index {self.index_path}: {exc}") from exc
        finally:
            connection.close()


def _schema_version(connection: sqlite3.Connection) -> int | None:
    try:
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return row[0]


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _create_schema(connection: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    if connection.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
        connection.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


def _insert_run(
    connection: sqlite3.Connection, record: RunRecord, findings: list[Finding], root: Path
) -> None:
    incident = {
        "incident_id": record.incident_id,
        "group_key": record.group_key,
        "alert_name": record.alert_name,
        "starts_at": _index_time(record.alert_starts_at) if record.alert_starts_at else None,
    }
    _insert(connection, "incidents", incident, conflict="IGNORE")
    run = record.model_dump(include=_RUN_COLUMNS)
    run.update(
        started_at=_index_time(record.started_at),
        finished_at=_index_time(record.finished_at),
        error_kind=(record.error or {}).get("kind"),
        path=record.path.relative_to(root).as_posix(),
        record=_dump(record),
        **{f"{name}_count": record.finding_counts.get(name, 0) for name in SEVERITIES},
    )
    _insert(connection, "runs", run)
    connection.execute("DELETE FROM findings WHERE run_id = ?", (record.run_id,))
    for position, finding in enumerate(findings):
        row = {name: getattr(finding, name) for name in _FINDING_COLUMNS}
        row.update(run_id=record.run_id, position=position, subject=json.dumps(finding.subject))
        _insert(connection, "findings", row)


def _insert(
    connection: sqlite3.Connection, table: str, row: dict[str, Any], *, conflict: str = "REPLACE"
) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    connection.execute(
        f"INSERT OR {conflict} INTO {table} ({columns}) VALUES ({marks})", tuple(row.values())
    )


def _dump(record: RunRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def _read_record(run_dir: Path) -> RunRecord:
    try:
        record = RunRecord.model_validate_json((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read the run record in {run_dir}: {exc}") from exc
    # The folder may have moved with the archive: where it is now wins.
    return record.model_copy(update={"path": run_dir})


def _read_findings(run_dir: Path) -> list[Finding]:
    path = run_dir / FINDINGS_FILE
    if not path.exists():
        return []
    try:
        return [
            Finding.from_dict(item)
            for item in json.loads(path.read_text(encoding="utf-8"))["findings"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
