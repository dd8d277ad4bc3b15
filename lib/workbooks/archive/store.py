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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbooks.archive import index
from workbooks.core.errors import ArchiveError, RunNotFoundError
from workbooks.core.findings import SEVERITIES, Finding, ranked

if TYPE_CHECKING:
    from workbooks.archive.retention import ArchiveStats, PrunePlan

SCHEMA_VERSION = index.SCHEMA_VERSION
INDEX_FILE = "index.sqlite"
STAGING_DIR = ".staging"
RUN_FILE = "run.json"
FINDINGS_FILE = "findings.json"
ALERT_FILE = "alert.json"
NOTEBOOK_FILE = "workbook.ipynb"
EVIDENCE_DIR = "evidence"
NOTES_FILE = "notes.jsonl"
RESOLVED_FILE = "resolved.json"

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    ``run_id`` and ``path`` are assigned by :meth:`Archive.commit`. ``pruned_at`` is set when
    retention deleted the run's notebook and evidence and kept its findings.
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
    pruned_at: datetime | None = None

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


class Note(BaseModel):
    """An action taken or an observation, added to an incident by an engineer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    note_id: str
    incident_id: str
    created_at: datetime
    author: str
    text: str


class IncidentSummary(BaseModel):
    """An incident as listings show it; :meth:`Archive.incident` adds its runs and notes.

    ``severity`` is the highest of its runs'; ``labels``, ``service`` and the ``last_run_*``
    fields come from its newest run. ``status`` is ``resolved`` once the alert resolved.
    """

    model_config = ConfigDict(frozen=True)

    incident_id: str
    alert_name: str
    group_key: str
    starts_at: datetime
    status: Literal["firing", "resolved"]
    ended_at: datetime | None = None
    severity: str
    service: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    runbooks: list[str] = Field(default_factory=list)
    run_count: int = 0
    note_count: int = 0
    last_run: RunRecord
    runs: list[RunRecord] = Field(default_factory=list)  # oldest first
    notes: list[Note] = Field(default_factory=list)  # oldest first


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
            raise self._index_failed(final.path, exc) from exc
        try:
            # Under the write lock: no cooperating writer can take the same run id meanwhile.
            final = self._move_into_place(staging, record, incident_dir, connection)
            index.insert_run(connection, final, findings, self.root)
            connection.execute("COMMIT")
            return final
        except sqlite3.Error as exc:
            index.rollback(connection)
            raise self._index_failed(final.path, exc) from exc
        finally:
            connection.close()

    def _index_failed(self, path: Path, exc: sqlite3.Error) -> ArchiveError:
        return ArchiveError(
            f"{path} is written but the index {self.index_path} could not be updated ({exc}); "
            "run `workbook reindex` to rebuild it from the folders"
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
                if index.select_run(connection, run_id) is not None:
                    return True
        return any(self.root.glob(f"*/{run_id}"))

    def _staging_folder(self, staging: Path) -> Path:
        staging = Path(staging).absolute()
        if staging.parent != self.root / STAGING_DIR or not staging.is_dir():
            raise ArchiveError(f"{staging} is not a staging folder of {self}")
        return staging

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
        if not _SAFE_ID.match(incident_id):
            return []
        return _read_notes(self.root / incident_id)

    def mark_resolved(self, incident_id: str, ended_at: datetime) -> bool:
        """Record that an incident's alert resolved at ``ended_at``; False if it is unknown.

        Writes ``<incident>/resolved.json`` (so reindex keeps it) and updates the index.
        """
        if not _SAFE_ID.match(incident_id) or not self._has_runs(incident_id):
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
        if _SAFE_ID.match(id) and self._has_runs(id):
            return id
        return self.get(id).incident_id  # a run id; RunNotFoundError says how to find ids

    def _has_runs(self, incident_id: str) -> bool:
        return any((self.root / incident_id).glob(f"[!.]*/{RUN_FILE}"))

    def _update_index(self, path: Path, change: Any) -> None:
        try:
            with self._writing() as connection:
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
        with self._reading() as connection:
            rows = index.select_runs(
                connection, runbook=runbook, since=since_time, incident=incident, limit=limit
            )
        return [self._record_from_row(record, path) for record, path in rows]

    def get(self, id: str) -> RunRecord:
        """A run by run id, or an incident id meaning its newest run."""
        if self.index_path.exists():
            with self._reading() as connection:
                row = index.select_run(connection, id)
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
        with self._reading() as connection:
            rows = index.select_incidents(connection, where)
        summaries = []
        for row in rows:
            newest = self._record_from_row(row.pop("newest_record"), row.pop("newest_path"))
            summary = IncidentSummary(
                **row, service=newest.service, labels=newest.labels, last_run=newest
            )
            summaries.append(summary)
        return summaries

    def filter_values(self) -> dict[str, list[str]]:
        """The runbooks, services and severities in the index, for filter menus."""
        if not self.index_path.exists():
            return {"runbook": [], "service": [], "severity": []}
        with self._reading() as connection:
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
        ``dry_run``) delete them. ``keep_findings`` keeps each run's findings, record and index
        row, marking it pruned. See :mod:`workbooks.archive.retention`."""
        from workbooks.archive import retention

        planned = retention.plan(self, older_than=older_than, keep_findings=keep_findings, now=now)
        return planned if dry_run else retention.apply(self, planned)

    def stats(self) -> ArchiveStats:
        """Incidents, runs, notes, bytes on disk, the oldest and newest run."""
        from workbooks.archive import retention

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
                (note for folder in incident_dirs for note in _read_notes(folder)),
                [resolved for folder in incident_dirs if (resolved := _read_resolved(folder))],
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
                yield _read_record(run_file.parent), _read_findings(run_file.parent)
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
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            connection = self._connect()
        except (sqlite3.Error, ArchiveError) as exc:
            raise ArchiveError(
                f"cannot read the index {self.index_path} ({exc}); `workbook reindex` rebuilds it"
            ) from exc
        try:
            yield connection
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot read the index {self.index_path}: {exc}") from exc
        finally:
            connection.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; sqlite3 errors are the caller's to word."""
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        finally:
            index.rollback(connection)
            connection.close()


def _dump(record: RunRecord) -> str:
    return json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all (a partial file, then one rename)."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"cannot write {path}: {exc}") from exc


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


def _read_notes(incident_dir: Path) -> list[Note]:
    try:
        lines = (incident_dir / NOTES_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ArchiveError(f"cannot read {incident_dir / NOTES_FILE}: {exc}") from exc
    notes = []
    for line in lines:
        with suppress(ValueError):  # a line cut short by a crash: the others still count
            notes.append(Note.model_validate_json(line))
    return sorted(notes, key=lambda note: (note.created_at, note.note_id))


def _read_resolved(incident_dir: Path) -> tuple[str, datetime] | None:
    try:
        document = json.loads((incident_dir / RESOLVED_FILE).read_text(encoding="utf-8"))
        ended_at = datetime.fromisoformat(document["ended_at"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return incident_dir.name, ended_at
