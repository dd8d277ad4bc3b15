"""Retention: how big an archive is (``stats``), and deleting what is too old (``prune``).

A prune is planned first, from the folders and the index, and the plan says what it would delete
and how many bytes that frees; applying it deletes exactly that. Two ways:

- **delete** (the default): the run's whole folder goes, and its index row. An incident whose
  runs all go is removed with its notes and resolution.
- **strip** (``keep_findings``): the notebook, evidence and rendered reports go; ``run.json``
  (marked ``pruned_at``), ``findings.json``, ``alert.json`` and the index row stay, so the
  incident still lists, searches and reports its findings.

A folder to delete is first renamed into ``.staging`` (one atomic step), then removed, so a run
folder is never left half-deleted. In an object store a run is deleted from the bucket first, its
commit marker before its other objects, so no reader sees it half-deleted either; a stripped
run's new ``run.json`` is uploaded after its other files are gone, and run folders a dead
worker left without a marker are removed once old. :class:`workbooks.archive.store.Archive`
calls into this module.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbooks.archive import index, staging
from workbooks.archive.records import (
    ALERT_FILE,
    FINDINGS_FILE,
    RUN_FILE,
    STAGING_DIR,
    RunRecord,
    read_findings,
    read_record,
    write_record,
)
from workbooks.core.errors import ArchiveError

if TYPE_CHECKING:  # the store calls in here with itself; only its public methods are used
    from workbooks.archive.store import Archive

# What a stripped run keeps: enough to list it, search it and report its findings.
KEPT_WHEN_STRIPPED = frozenset({RUN_FILE, FINDINGS_FILE, ALERT_FILE})


@dataclass(frozen=True, kw_only=True)
class PrunedRun:
    """One run a prune deletes (``delete``) or strips down to its findings (``strip``)."""

    run_id: str
    incident_id: str
    started_at: datetime
    path: Path
    action: Literal["delete", "strip"]
    bytes: int


@dataclass(frozen=True, kw_only=True)
class PrunedIncident:
    """An incident folder removed because all its runs are deleted; ``bytes`` beyond its runs."""

    incident_id: str
    path: Path
    bytes: int


@dataclass(frozen=True, kw_only=True)
class PrunePlan:
    """What :meth:`Archive.prune` deletes (``applied``) or would delete (a dry run)."""

    cutoff: datetime
    keep_findings: bool
    runs: tuple[PrunedRun, ...]
    incidents: tuple[PrunedIncident, ...]
    leftovers: tuple[staging.Leftover, ...] = ()  # staging folders of runs that died
    applied: bool = False

    @property
    def bytes(self) -> int:
        return (
            sum(run.bytes for run in self.runs)
            + sum(gone.bytes for gone in self.incidents)
            + sum(left.bytes for left in self.leftovers)
        )

    def describe(self) -> list[str]:
        """What a person reads: each run, each incident, the total, and how to go on."""
        verb = "deleted" if self.applied else "would delete"
        what = "notebooks and evidence of" if self.keep_findings else ""
        cutoff = f"{self.cutoff:%Y-%m-%d %H:%M} UTC"
        lines = [
            f"  remove  leftover staging folder {left.path.name} (its run died)  "
            f"{human_bytes(left.bytes)}"
            for left in self.leftovers
        ]
        if not self.runs:
            if not lines:
                return [f"no runs started before {cutoff}: nothing to prune"]
            lines.insert(0, f"no runs started before {cutoff}; {verb} leftovers:")
            if not self.applied:
                lines.append("dry run: nothing was deleted; pass --yes to delete")
            return lines
        lines[:0] = [
            f"{verb} {what} {len(self.runs)} runs started before {cutoff}, "
            f"freeing {human_bytes(self.bytes)} ({self.bytes:,} bytes):".replace("  ", " ")
        ]
        for run in self.runs:
            lines.append(
                f"  {run.action:6}  {run.run_id}  incident {run.incident_id}  "
                f"{human_bytes(run.bytes)}"
            )
        for gone in self.incidents:
            lines.append(
                f"  remove  incident {gone.incident_id} (all its runs go; with its notes)  "
                f"{human_bytes(gone.bytes)}"
            )
        if not self.applied:
            lines.append("dry run: nothing was deleted; pass --yes to delete")
        elif self.keep_findings:
            lines.append("kept each run's findings.json, run.json and alert.json, marked pruned")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "cutoff": _iso(self.cutoff),
            "keep_findings": self.keep_findings,
            "bytes": self.bytes,
            "runs": [
                {
                    "run_id": run.run_id,
                    "incident_id": run.incident_id,
                    "started_at": _iso(run.started_at),
                    "action": run.action,
                    "bytes": run.bytes,
                    "path": str(run.path),
                }
                for run in self.runs
            ],
            "incidents": [
                {"incident_id": gone.incident_id, "bytes": gone.bytes, "path": str(gone.path)}
                for gone in self.incidents
            ],
            "leftovers": [{"path": str(left.path), "bytes": left.bytes} for left in self.leftovers],
        }


@dataclass(frozen=True, kw_only=True)
class ArchiveStats:
    """The size of an archive: counts from the index, bytes from the folders."""

    root: Path
    incidents: int
    runs: int
    pruned_runs: int
    notes: int
    bytes: int
    oldest_run: datetime | None
    newest_run: datetime | None
    leftovers: tuple[staging.Leftover, ...] = ()

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("incidents", str(self.incidents)),
            ("runs", f"{self.runs} ({self.pruned_runs} pruned)"),
            ("notes", str(self.notes)),
            ("size", f"{human_bytes(self.bytes)} ({self.bytes:,} bytes)"),
            ("oldest run", f"{self.oldest_run:%Y-%m-%d %H:%M} UTC" if self.oldest_run else "-"),
            ("newest run", f"{self.newest_run:%Y-%m-%d %H:%M} UTC" if self.newest_run else "-"),
            (
                "leftovers",
                f"{len(self.leftovers)} staging folders of runs that died, "
                f"{human_bytes(sum(left.bytes for left in self.leftovers))} "
                "(`workbook archive prune` removes them)"
                if self.leftovers
                else "none",
            ),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "incidents": self.incidents,
            "runs": self.runs,
            "pruned_runs": self.pruned_runs,
            "notes": self.notes,
            "bytes": self.bytes,
            "oldest_run": _iso(self.oldest_run) if self.oldest_run else None,
            "newest_run": _iso(self.newest_run) if self.newest_run else None,
            "leftovers": [{"path": str(left.path), "bytes": left.bytes} for left in self.leftovers],
        }


def human_bytes(size: int) -> str:
    for suffix, unit in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= unit:
            return f"{size / unit:.1f} {suffix}"
    return f"{size} B"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def folder_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (or of the file), symlinks not followed."""
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except FileNotFoundError:
                continue  # removed meanwhile
    return total


def _stripped_files(run_dir: Path) -> Iterator[Path]:
    for entry in sorted(run_dir.iterdir()):
        if entry.name not in KEPT_WHEN_STRIPPED:
            yield entry


def plan(
    archive: Archive, *, older_than: timedelta, keep_findings: bool, now: datetime | None = None
) -> PrunePlan:
    """The runs started before ``now - older_than``, and what pruning them frees."""
    cutoff = (now or datetime.now(UTC)) - older_than
    all_runs = archive.runs()
    old = [run for run in all_runs if run.started_at < cutoff]
    pruned: list[PrunedRun] = []
    for run in old:
        if keep_findings:
            size = sum(folder_bytes(entry) for entry in _stripped_files(run.path))
            if size or run.pruned_at is None:
                pruned.append(_pruned(run, "strip", size))
        else:
            pruned.append(_pruned(run, "delete", folder_bytes(run.path)))
    gone: list[PrunedIncident] = []
    if not keep_findings:
        remaining = {run.incident_id for run in all_runs if run.started_at >= cutoff}
        for incident_id in sorted({run.incident_id for run in old} - remaining):
            folder = archive.root / incident_id
            runs_bytes = sum(run.bytes for run in pruned if run.incident_id == incident_id)
            gone.append(
                PrunedIncident(
                    incident_id=incident_id,
                    path=folder,
                    bytes=max(folder_bytes(folder) - runs_bytes, 0),
                )
            )
    return PrunePlan(
        cutoff=cutoff,
        keep_findings=keep_findings,
        runs=tuple(pruned),
        incidents=tuple(gone),
        leftovers=tuple(archive.leftovers()),
    )


def _pruned(run: RunRecord, action: Literal["delete", "strip"], size: int) -> PrunedRun:
    return PrunedRun(
        run_id=run.run_id,
        incident_id=run.incident_id,
        started_at=run.started_at,
        path=run.path,
        action=action,
        bytes=size,
    )


def apply(archive: Archive, planned: PrunePlan) -> PrunePlan:
    """Delete what ``planned`` lists, under the index's write lock; the plan, ``applied``."""
    trash = archive.root / STAGING_DIR / staging.owned_name("prune-")
    objects = archive.objects
    try:
        trash.mkdir(parents=True)
        if archive.mirror is not None:
            for run, _ in archive.mirror.uncommitted(older_than=staging.STALE_AFTER):
                objects.delete_tree(run)  # type: ignore[union-attr]  (a mirror has objects)
        for left in planned.leftovers:
            if left.path.exists() or left.path.is_symlink():
                os.rename(left.path, trash / left.path.name)
        with archive.writing() as connection:
            for run in planned.runs:
                relative = f"{run.incident_id}/{run.path.name}"
                if objects is not None and run.action == "delete":
                    objects.delete_run(relative)  # the bucket first: it is the truth
                if not run.path.is_dir():
                    index.delete_run(connection, run.run_id)
                    continue
                if run.action == "delete":
                    os.rename(run.path, trash / run.run_id)  # atomic: whole or absent
                    index.delete_run(connection, run.run_id)
                    continue
                if objects is not None:
                    objects.delete_files(
                        f"{relative}/{path.relative_to(run.path).as_posix()}"
                        for entry in _stripped_files(run.path)
                        for path in ([entry] if entry.is_file() else entry.rglob("*"))
                        if path.is_file()
                    )
                for entry in _stripped_files(run.path):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                record = read_record(run.path).model_copy(update={"pruned_at": datetime.now(UTC)})
                write_record(run.path, record)
                if objects is not None:
                    objects.put_text(
                        f"{relative}/{RUN_FILE}", (run.path / RUN_FILE).read_text(encoding="utf-8")
                    )
                index.insert_run(connection, record, read_findings(run.path), archive.root)
            for incident in planned.incidents:
                if objects is not None:  # its notes and resolution; its runs are gone already
                    objects.delete_tree(incident.incident_id)
                if incident.path.is_dir():
                    os.rename(incident.path, trash / incident.incident_id)
                index.delete_incident(connection, incident.incident_id)
    except (OSError, sqlite3.Error) as exc:
        raise ArchiveError(
            f"the prune stopped part-way ({exc}); what it deleted is gone, the rest is intact: "
            "run `workbook reindex`, then the prune again"
        ) from exc
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return PrunePlan(
        cutoff=planned.cutoff,
        keep_findings=planned.keep_findings,
        runs=planned.runs,
        incidents=planned.incidents,
        leftovers=planned.leftovers,
        applied=True,
    )


def stats(archive: Archive) -> ArchiveStats:
    archive.refresh(force=True)  # an object-store archive: counts as the bucket has them
    counts = {"incidents": 0, "runs": 0, "pruned_runs": 0, "notes": 0}
    oldest = newest = None
    if archive.index_file.exists():
        with archive.reading() as connection:
            found = index.counts(connection)
        counts = {key: found[key] for key in counts}
        oldest = index.parse_index_time(found["oldest_run"])
        newest = index.parse_index_time(found["newest_run"])
    if archive.mirror is not None:  # the bucket's bytes, not this host's cache
        listing = archive.mirror.last_listing
        size = listing.bytes if listing is not None else 0
    else:
        size = folder_bytes(archive.root) if archive.root.exists() else 0
    return ArchiveStats(
        root=archive.root,
        bytes=size,
        oldest_run=oldest,
        newest_run=newest,
        leftovers=tuple(archive.leftovers()),
        **counts,
    )
