"""The archive: one folder per incident, one sub-folder per run, and a SQLite index over them.

::

    <root>/index.sqlite                            derived: workbooks.archive.index
    <root>/<incident_id>/notes.jsonl               actions taken, one JSON object a line, appended
                         resolved.json             when and that the alert resolved
                         <run_id>/workbook.ipynb   the executed notebook
                                  findings.json    {"incident", "runbook", "status", ...}
                                  alert.json       the webhook payload
                                  run.json         the :class:`RunRecord`
                                  evidence/        what the notebook saved
                                  report.html      the rendered report, once asked for
    <root>/.staging/<uuid>/                        runs being built, folders being deleted

A run is built in a staging folder and moved into place with one ``os.rename``, so a run folder
is either whole or absent. The folders are the truth; the index is derived from them (``reindex``
rebuilds it, and an index of an older schema is rebuilt when first opened), so a crash between
a file write and the index write loses nothing. Retention (:meth:`Archive.prune`) is in
:mod:`workbooks.archive.retention`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workbooks.archive import index, retention, staging
from workbooks.archive.records import (
    ALERT_FILE,
    EVIDENCE_DIR,
    FINDINGS_FILE,
    INDEX_FILE,
    NOTEBOOK_FILE,
    NOTES_FILE,
    RESOLVED_FILE,
    RUN_FILE,
    SAFE_ID,
    IncidentSummary,
    Note,
    RunRecord,
    incident_id,
    package_version,
    read_findings,
    read_notes,
    read_record,
    read_resolved,
    slug,
    write_atomically,
    write_findings,
    write_record,
)
from workbooks.archive.retention import ArchiveStats, PrunePlan
from workbooks.core.errors import ArchiveError, RunNotFoundError
from workbooks.core.findings import Finding

# Re-exported: callers name the archive's files and records through the store.
__all__ = [
    "ALERT_FILE",
    "EVIDENCE_DIR",
    "FINDINGS_FILE",
    "NOTEBOOK_FILE",
    "NOTES_FILE",
    "RESOLVED_FILE",
    "RUN_FILE",
    "Archive",
    "IncidentSummary",
    "Note",
    "RunRecord",
    "incident_id",
    "package_version",
    "slug",
    "write_atomically",
    "write_findings",
    "write_record",
]
SCHEMA_VERSION = index.SCHEMA_VERSION
log = logging.getLogger(__name__)


def _check_id(value: str, what: str) -> str:
    if not SAFE_ID.match(value):
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
        """A new, empty staging folder for one run (refused when the disk is nearly full)."""
        return staging.new_folder(self.root)

    def discard(self, folder: Path) -> None:
        staging.discard(self._staging_folder(folder))

    def leftovers(self) -> list[staging.Leftover]:
        """Staging folders of runs that died: ``archive stats`` shows them, ``prune`` removes."""
        return staging.leftovers(self.root)

    def clean_staging(self, *, older_than: timedelta = staging.STALE_AFTER) -> list[Path]:
        """Remove staging folders left by runs that died (their process is gone, or old)."""
        return [gone.path for gone in staging.remove_leftovers(self.root, older_than=older_than)]

    def commit(
        self, folder: Path, record: RunRecord, findings: Sequence[Finding] | None = None
    ) -> RunRecord:
        """Move a staged run into place and index it; return the record with its id and path.

        ``findings`` are written to ``findings.json`` here (else it is read from the folder).
        If a file cannot be written (a full disk), nothing is archived: the staging folder is
        removed, the alert kept in ``.unarchived``, the index untouched, and
        :class:`ArchiveError` says so in one line. The index's write lock is taken before the
        run id is chosen, so cooperating writers never pick the same id. If only the index
        cannot be written, the run folder is kept and the error says how to rebuild the index.
        """
        folder = self._staging_folder(folder)
        incident_dir = self.root / _check_id(record.incident_id, "incident")
        try:
            if findings is not None:
                write_findings(folder, record, findings)
            found = read_findings(folder)
            incident_dir.mkdir(parents=True, exist_ok=True)
        except (ArchiveError, OSError) as exc:
            raise self._not_archived(folder, exc) from exc
        connection: sqlite3.Connection | None = None
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if connection is not None:
                connection.close()
            # The run is kept all the same; the id is then unique by the folders alone.
            final = self._move_into_place(folder, record, incident_dir, None)
            raise self._index_failed(final.path, exc) from exc
        try:
            # Under the write lock: no cooperating writer can take the same run id meanwhile.
            final = self._move_into_place(folder, record, incident_dir, connection)
            index.insert_run(connection, final, found, self.root)
            connection.execute("COMMIT")
            return final
        except sqlite3.Error as exc:
            index.rollback(connection)
            raise self._index_failed(final.path, exc) from exc
        finally:
            connection.close()

    def _not_archived(self, folder: Path, exc: Exception) -> ArchiveError:
        kept = staging.salvage(self.root, folder)
        again = (
            f"; the alert is kept in {kept}: free space, then `workbook run --alert {kept}`"
            if kept
            else ""
        )
        return ArchiveError(f"nothing was archived: {exc}{again}")

    def _index_failed(self, path: Path, exc: sqlite3.Error) -> ArchiveError:
        return ArchiveError(
            f"{path} is written but the index {self.index_path} could not be updated ({exc}); "
            "run `workbook reindex` to rebuild it from the folders"
        )

    def _move_into_place(
        self,
        folder: Path,
        record: RunRecord,
        incident_dir: Path,
        connection: sqlite3.Connection | None,
    ) -> RunRecord:
        base = f"{record.started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{slug(record.runbook)}"
        for attempt in range(1, 1000):
            run_id = base if attempt == 1 else f"{base}-{attempt}"
            if self._run_id_taken(run_id, connection):
                continue
            final = record.model_copy(update={"run_id": run_id, "path": incident_dir / run_id})
            try:
                write_record(folder, final)
            except ArchiveError as exc:
                raise self._not_archived(folder, exc) from exc
            try:
                # Atomic on one filesystem; refuses a non-empty target, so a lost race retries.
                os.rename(folder, final.path)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise ArchiveError(f"cannot move the run into {final.path}: {exc}") from exc
            return final
        raise ArchiveError(f"too many runs named {base} in {incident_dir}")

    def _run_id_taken(self, run_id: str, connection: sqlite3.Connection | None) -> bool:
        if connection is not None:
            with suppress(sqlite3.Error):  # then the folders alone decide
                if index.select_run(connection, run_id) is not None:
                    return True
        return any(self.root.glob(f"*/{run_id}"))

    def _staging_folder(self, folder: Path) -> Path:
        folder = Path(folder).absolute()
        if not staging.is_staging_folder(self.root, folder):
            raise ArchiveError(f"{folder} is not a staging folder of {self}")
        return folder

    # -- notes and resolution ---------------------------------------------------------------------

    def add_note(self, incident_id: str, text: str, *, author: str) -> Note:
        """Append a note to an incident (an incident id, or a run id meaning its incident).

        The note is appended to ``<incident>/notes.jsonl`` first, so it survives a lost index,
        reindex and new runs of the incident; then it is indexed for the timeline and search.
        """
        if not text.strip():
            raise ArchiveError("a note needs some text: say what was done and what came of it")
        incident = self._known_incident(incident_id)
        note = Note(
            note_id=uuid.uuid4().hex[:16],
            incident_id=incident,
            created_at=datetime.now(UTC),
            author=author.strip() or "unknown",
            text=text.strip(),
        )
        path = self.root / incident / NOTES_FILE
        line = (note.model_dump_json() + "\n").encode("utf-8")
        try:
            # One write() in append mode: lines from concurrent writers never interleave.
            descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(descriptor).st_size
                if size and os.pread(descriptor, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a line cut short by a crash must not swallow this one
                os.write(descriptor, line)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise ArchiveError(f"cannot write the note to {path}: {exc}") from exc
        self._update_index(path, lambda connection: index.insert_note(connection, note))
        return note

    def notes(self, incident_id: str) -> list[Note]:
        """An incident's notes, oldest first, from its ``notes.jsonl``."""
        if not SAFE_ID.match(incident_id):
            return []
        return read_notes(self.root / incident_id)

    def mark_resolved(self, incident_id: str, ended_at: datetime) -> bool:
        """Record that an incident's alert resolved at ``ended_at``; False if it is unknown.

        Writes ``<incident>/resolved.json`` (so reindex keeps it) and updates the index.
        """
        if not SAFE_ID.match(incident_id) or not self._has_runs(incident_id):
            return False
        path = self.root / incident_id / RESOLVED_FILE
        document = {
            "incident_id": incident_id,
            "ended_at": ended_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "recorded_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        write_atomically(path, json.dumps(document, indent=2) + "\n")
        self._update_index(
            path, lambda connection: index.set_resolved(connection, incident_id, ended_at)
        )
        return True

    def _known_incident(self, id: str) -> str:
        if SAFE_ID.match(id) and self._has_runs(id):
            return id
        return self.get(id).incident_id  # a run id; RunNotFoundError says how to find ids

    def _has_runs(self, incident_id: str) -> bool:
        return any((self.root / incident_id).glob(f"[!.]*/{RUN_FILE}"))

    def _update_index(self, path: Path, change: Any) -> None:
        try:
            with self.writing() as connection:
                change(connection)
        except sqlite3.Error as exc:
            raise self._index_failed(path, exc) from exc

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
        since_time = datetime.now(UTC) - since if since is not None else None
        with self.reading() as connection:
            rows = index.select_runs(
                connection, runbook=runbook, since=since_time, incident=incident, limit=limit
            )
        return [self._record_from_row(record, path) for record, path in rows]

    def get(self, id: str) -> RunRecord:
        """A run by run id, or an incident id meaning its newest run."""
        if self.index_path.exists():
            with self.reading() as connection:
                row = index.select_run(connection, id)
            if row is not None:
                return self._record_from_row(*row)
        # Not indexed (a crash before the index write, or no index yet): look at the folders.
        if SAFE_ID.match(id):
            candidates = [*self.root.glob(f"*/{id}/{RUN_FILE}")]
            candidates = candidates or sorted((self.root / id).glob(f"*/{RUN_FILE}"))[-1:]
            candidates = [path for path in candidates if not path.parts[-3].startswith(".")]
            if candidates:
                return read_record(candidates[0].parent)
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

    def incidents(
        self,
        *,
        runbook: str | None = None,
        service: str | None = None,
        severity: str | None = None,
        status: str | None = None,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        search: str | None = None,
        limit: int | None = None,
    ) -> list[IncidentSummary]:
        """Incidents newest first (by when the alert fired), from the index alone.

        ``runbook``, ``service`` and ``severity`` match any of an incident's runs; ``status`` is
        ``firing`` or ``resolved`` (the incident), or ``succeeded`` or ``failed`` (its newest
        run); ``since`` and ``until`` bound when it fired (``since`` may be a duration back from
        now); ``search`` is free text over alert labels, finding titles and notes.
        """
        if isinstance(since, timedelta):
            since = datetime.now(UTC) - since
        where = index.IncidentFilter(
            runbook=runbook,
            service=service,
            severity=severity,
            status=status,
            since=since,
            until=until,
            search=search,
            limit=limit,
        )
        return self._incidents(where)

    def incident(self, incident_id: str) -> IncidentSummary:
        """One incident (or the incident of a run id) with its runs and notes, oldest first."""
        found = self._incidents(index.IncidentFilter(incident_id=incident_id))
        if not found:
            owner = self.get(incident_id).incident_id  # RunNotFoundError says how to find ids
            found = self._incidents(index.IncidentFilter(incident_id=owner))
        if not found:
            raise RunNotFoundError(
                f"incident {incident_id!r} is in the folders of {self.root} but not in its "
                "index; `workbook reindex` rebuilds the index"
            )
        runs = self.runs(incident=found[0].incident_id)[::-1]
        notes = self.notes(found[0].incident_id)
        return found[0].model_copy(update={"runs": runs, "notes": notes})

    def _incidents(self, where: index.IncidentFilter) -> list[IncidentSummary]:
        if not self.index_path.exists():
            return []
        with self.reading() as connection:
            rows = index.select_incidents(connection, where)
        summaries = []
        for row in rows:
            try:
                newest = self._record_from_row(row.pop("newest_record"), row.pop("newest_path"))
                summary = IncidentSummary(
                    **row, service=newest.service, labels=newest.labels, last_run=newest
                )
            except (ValueError, TypeError, OverflowError) as exc:
                # One bad record must not take the list down for everyone: leave it out.
                log.warning("incident %s left out of the list: %s", row.get("incident_id"), exc)
                continue
            summaries.append(summary)
        return summaries

    def filter_values(self) -> dict[str, list[str]]:
        """The runbooks, services and severities in the index, for filter menus."""
        if not self.index_path.exists():
            return {"runbook": [], "service": [], "severity": []}
        with self.reading() as connection:
            return {
                column: index.select_values(connection, column)
                for column in ("runbook", "service", "severity")
            }

    # -- retention -------------------------------------------------------------------------------

    def prune(
        self,
        *,
        older_than: timedelta,
        keep_findings: bool = False,
        dry_run: bool = True,
        now: datetime | None = None,
    ) -> PrunePlan:
        """Runs started more than ``older_than`` ago: what deleting them frees, and (not
        ``dry_run``) delete them, with the staging folders of runs that died. ``keep_findings``
        keeps each run's findings, record and index row, marking it pruned. See
        :mod:`workbooks.archive.retention`."""
        planned = retention.plan(self, older_than=older_than, keep_findings=keep_findings, now=now)
        return planned if dry_run else retention.apply(self, planned)

    def stats(self) -> ArchiveStats:
        """Incidents, runs, notes, bytes on disk, the oldest and newest run, leftovers."""
        return retention.stats(self)

    # -- the index -------------------------------------------------------------------------------

    def reindex(self) -> int:
        """Rebuild the index from the folders (runs, notes, resolutions); return the run count."""
        try:
            # No schema check: rebuilding is how an index of another schema version is replaced.
            connection = self._connect(check_schema=False)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open the index {self.index_path}: {exc}") from exc
        incident_dirs = [path for path in sorted(self.root.glob("[!.]*/")) if path.is_dir()]
        try:
            connection.execute("BEGIN IMMEDIATE")
            count = index.rebuild(
                connection,
                self._indexable_runs(),
                (note for folder in incident_dirs for note in read_notes(folder)),
                [resolved for folder in incident_dirs if (resolved := read_resolved(folder))],
                self.root,
            )
            connection.execute("COMMIT")
            return count
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot rebuild the index {self.index_path}: {exc}") from exc
        finally:
            index.rollback(connection)
            connection.close()

    def _indexable_runs(self) -> Iterator[tuple[RunRecord, list[Finding]]]:
        for run_file in sorted(self.root.glob(f"[!.]*/*/{RUN_FILE}")):
            try:
                yield read_record(run_file.parent), read_findings(run_file.parent)
            except ArchiveError:
                continue  # a folder someone put here by hand: not ours to index

    def _connect(self, *, check_schema: bool = True) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        timeout = self.busy_timeout_seconds
        if not check_schema:
            connection = index.connect(self.index_path, timeout=timeout, create=False)
            connection.execute("PRAGMA journal_mode = WAL")
            return connection
        try:
            return index.connect(self.index_path, timeout=timeout)
        except index.OldSchemaError:
            # The index is derived: an older one is rebuilt from the folders, not migrated.
            self.reindex()
            return index.connect(self.index_path, timeout=timeout)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading the index; on a read-only archive, an immutable one."""
        try:
            connection = self._connect()
        except (sqlite3.Error, ArchiveError, OSError) as exc:
            try:
                if self._writable():
                    raise
                # A read-only mount: SQLite cannot create the WAL's shared memory there, so
                # read the file as immutable (nothing can change it under us anyway).
                connection = index.connect_read_only(self.index_path)
            except (sqlite3.Error, ArchiveError, OSError):
                raise ArchiveError(
                    f"cannot read the index {self.index_path} ({exc}); `workbook reindex` "
                    "rebuilds it"
                ) from exc
        try:
            yield connection
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index {self.index_path}: {exc}") from exc
        finally:
            connection.close()

    def _writable(self) -> bool:
        return os.access(self.root, os.W_OK) and (
            not self.index_path.exists() or os.access(self.index_path, os.W_OK)
        )

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the index; sqlite3 errors are the caller's to word."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        finally:
            index.rollback(connection)
            connection.close()
