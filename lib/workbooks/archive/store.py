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
    <root>/.staging/<host>.<pid>.<random>/         runs being built, folders being deleted
    <root>/.unarchived/                            alerts of runs a full disk kept out

A run is built in a staging folder and moved into place with one ``os.rename``, so a run
folder is either whole or absent (:mod:`workbooks.archive.staging`). What each file holds, and
its one writer: :mod:`workbooks.archive.records`; opening the index:
:mod:`workbooks.archive.connection`. The folders are the truth; the index is derived from them
(``reindex`` rebuilds it, and an index of an older schema is rebuilt when first opened), so a
crash between a file write and the index write loses nothing. Retention
(:meth:`Archive.prune`) is in :mod:`workbooks.archive.retention`.

An archive given as ``s3://bucket/prefix`` lives in an object store (:mod:`.objects`): ``root``
is then this host's cache of it (:mod:`.mirror`), runs are uploaded on commit and the cache and
its index are refreshed from the bucket before reads. ``objects`` is None for a local folder,
which keeps its atomic rename and behaves exactly as before.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from workbooks.archive import index, retention, staging
from workbooks.archive import notes as incident_notes
from workbooks.archive.connection import open_index
from workbooks.archive.mirror import Mirror
from workbooks.archive.objects import ObjectStore, default_cache, is_url
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
from workbooks.core.config import ArchiveStorage, Config
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


class Archive:
    """Run folders under ``root`` plus the index; safe for several processes writing at once."""

    def __init__(
        self,
        root: str | Path,
        *,
        busy_timeout_seconds: float = 30.0,
        storage: ArchiveStorage | None = None,
        database: str | None = None,
    ) -> None:
        self.objects: ObjectStore | None = None
        self.mirror: Mirror | None = None
        if is_url(root):  # an object store; its cache folder is what this host reads
            storage = storage or ArchiveStorage()
            url = str(root)
            self.objects = ObjectStore(
                url, endpoint_url=storage.endpoint_url, region=storage.region
            )
            root = Path(storage.cache) if storage.cache else default_cache(self.objects.url)
        self.root = Path(root).absolute()
        if self.objects is not None:
            self.mirror = Mirror(self.objects, self.root)
        self.index_path = self.root / INDEX_FILE
        self.busy_timeout_seconds = busy_timeout_seconds
        # SQLite in the archive folder, or PostgreSQL when `database` (or the config) names one.
        self.index_file = open_index(
            self.index_path, timeout=busy_timeout_seconds, rebuild=self.reindex, database=database
        )

    @classmethod
    def from_config(cls, config: Config) -> Archive:
        """The configured archive: a folder, or ``s3://...`` with its endpoint and cache."""
        location = config.archive_url or config.archive_dir
        return cls(location, storage=config.archive_storage, database=config.database)

    @property
    def location(self) -> str:
        """What a person named: the folder, or the object store's URL."""
        return self.objects.url if self.objects is not None else str(self.root)

    def __repr__(self) -> str:
        return f"Archive({self.location!r})"

    def refresh(self, *, force: bool = False) -> None:
        """An object-store archive: bring this host's cache up to the bucket (rate-limited)."""
        if self.mirror is not None:
            self.mirror.refresh(self, force=force)

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
        return staging.commit(self, self._staging_folder(folder), record, findings)

    def _staging_folder(self, folder: Path) -> Path:
        folder = Path(folder).absolute()
        if not staging.is_staging_folder(self.root, folder):
            raise ArchiveError(f"{folder} is not a staging folder of {self}")
        return folder

    # -- notes and resolution ---------------------------------------------------------------------

    def add_note(self, incident_id: str, text: str, *, author: str) -> Note:
        """Append a note to an incident (an incident id, or a run id meaning its incident):
        to ``<incident>/notes.jsonl``, so it survives a lost index, reindex and new runs of
        the incident; then to the index, for the timeline and search."""
        return incident_notes.add_note(self, incident_id, text, author=author)

    def notes(self, incident_id: str) -> list[Note]:
        """An incident's notes, oldest first, from its ``notes.jsonl``."""
        if not SAFE_ID.match(incident_id):
            return []
        self.refresh()
        return read_notes(self.root / incident_id)

    def mark_resolved(self, incident_id: str, ended_at: datetime) -> bool:
        """Record that an incident's alert resolved at ``ended_at``; False if it is unknown.
        Writes ``<incident>/resolved.json`` (so reindex keeps it) and updates the index."""
        return incident_notes.mark_resolved(self, incident_id, ended_at)

    def has_runs(self, incident_id: str) -> bool:
        self.refresh()
        return any((self.root / incident_id).glob(f"[!.]*/{RUN_FILE}"))

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
        self.refresh()
        if not self.index_file.exists():
            return []
        since_time = datetime.now(UTC) - since if since is not None else None
        with self.reading() as connection:
            rows = index.select_runs(
                connection, runbook=runbook, since=since_time, incident=incident, limit=limit
            )
        return [self._record_from_row(record, path) for record, path in rows]

    def get(self, id: str) -> RunRecord:
        """A run by run id, or an incident id meaning its newest run."""
        self.refresh()
        if self.index_file.exists():
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
        if self.mirror is not None and not (self.root / path / RUN_FILE).is_file():
            self.mirror.fetch(path)  # indexed by another host (a shared index): copy it here
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
        self.refresh()
        if not self.index_file.exists():
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
        self.refresh()
        if not self.index_file.exists():
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
        """Rebuild the index from the folders (runs, notes, resolutions); return the run count.

        An object-store archive's cache is first brought up to the bucket."""
        if self.mirror is not None:
            self.mirror.refresh(self, force=True, update_index=False)
        try:
            # No schema check: rebuilding is how an index of another schema version is replaced.
            connection = self.index_file.connect(check_schema=False)
        except sqlite3.Error as exc:
            raise ArchiveError(f"cannot open the index {self.index_file.label}: {exc}") from exc
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
            raise ArchiveError(f"cannot rebuild the index {self.index_file.label}: {exc}") from exc
        finally:
            index.rollback(connection)
            connection.close()

    def _indexable_runs(self) -> Iterator[tuple[RunRecord, list[Finding]]]:
        for run_file in sorted(self.root.glob(f"[!.]*/*/{RUN_FILE}")):
            try:
                yield read_record(run_file.parent), read_findings(run_file.parent)
            except ArchiveError:
                continue  # a folder someone put here by hand: not ours to index

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading the index; on a read-only archive, an immutable one."""
        with self.index_file.reading() as connection:
            yield connection

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the index; sqlite3 errors are the caller's to word."""
        with self.index_file.writing() as connection:
            yield connection
