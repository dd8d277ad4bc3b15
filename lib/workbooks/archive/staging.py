"""The staging area, ``<archive>/.staging``: where runs are built, and moved into the archive.

Each folder is named ``<host>.<pid>.<random>`` after the process that builds in it, so a folder
whose process is gone (a run killed mid-way) is known to be a leftover at once, not only after an
hour; a folder of another host is judged by its age alone. When a run cannot be archived (a full
disk), its alert is kept in ``<archive>/.unarchived`` so it can be run again later, and the rest
of its staging folder is removed. :func:`commit` (``Archive.commit``) moves a whole run into
place with one ``os.rename``, so a run folder is either whole or absent. For an object-store
archive the staging folder is in the host's cache, and the run is first uploaded, its
``run.json`` (the commit marker) last (:mod:`workbooks.archive.objects`), then moved into the
cache.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from workbooks.archive import index
from workbooks.archive.records import (
    ALERT_FILE,
    SAFE_ID,
    STAGING_DIR,
    RunRecord,
    ran_by,
    read_findings,
    slug,
    write_findings,
    write_record,
)
from workbooks.core.errors import ArchiveError
from workbooks.core.findings import Finding

if TYPE_CHECKING:  # the store calls in here with itself; only its public face is used
    from workbooks.archive.store import Archive

UNARCHIVED_DIR = ".unarchived"
# Below this, a run is not started: it could not write its notebook, let alone archive it.
MIN_FREE_BYTES = 1024 * 1024
# A folder whose owner cannot be checked (another host) is a leftover after this long.
STALE_AFTER = timedelta(hours=1)
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40] or "host"


@dataclass(frozen=True, kw_only=True)
class Leftover:
    """A staging folder no live run owns: what ``archive stats`` shows and ``prune`` removes."""

    path: Path
    bytes: int
    modified_at: datetime


def owned_name(prefix: str = "") -> str:
    """``<prefix><host>.<pid>.<random>``: a staging folder name that says who owns it."""
    return f"{prefix}{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:16]}"


def new_folder(root: Path) -> Path:
    """A new, empty staging folder for one run; refused when the disk is (nearly) full."""
    staging = root / STAGING_DIR / owned_name()
    try:
        staging.mkdir(parents=True)
        free = free_bytes(staging)
    except OSError as exc:
        raise ArchiveError(f"cannot create a staging folder in {root}: {exc}") from exc
    if free < MIN_FREE_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(
            f"the disk holding the archive {root} is full ({free // 1024} KiB free): nothing "
            "was run; free some space (`workbook archive prune` removes old runs) and run the "
            "alert again"
        )
    return staging


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def is_staging_folder(root: Path, path: Path) -> bool:
    return path.parent == root / STAGING_DIR and path.is_dir() and not path.is_symlink()


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def salvage(root: Path, staging: Path) -> Path | None:
    """Keep a failed run's alert in ``.unarchived`` (a rename: no space needed), drop the rest."""
    alert = staging / ALERT_FILE
    kept = None
    if alert.is_file() and alert.stat().st_size:
        target = root / UNARCHIVED_DIR / f"{staging.name}-{ALERT_FILE}"
        try:
            target.parent.mkdir(exist_ok=True)
            os.rename(alert, target)
            kept = target
        except OSError:
            kept = None
    discard(staging)
    return kept


def _owner_alive(name: str) -> bool | None:
    """Whether the process named in a folder name runs; None when that cannot be known here."""
    parts = name.removeprefix("prune-").split(".")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(root: Path, *, older_than: timedelta = STALE_AFTER) -> list[Leftover]:
    """Staging folders whose run is gone: its process died, or (owner unknown) it is old."""
    folder = root / STAGING_DIR
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than.total_seconds()
    found = []
    for path in sorted(folder.iterdir()):
        try:
            modified = path.lstat().st_mtime
        except FileNotFoundError:
            continue  # finished meanwhile
        alive = _owner_alive(path.name)
        if alive or (alive is None and modified > cutoff):
            continue
        found.append(
            Leftover(
                path=path,
                bytes=_size(path),
                modified_at=datetime.fromtimestamp(modified, UTC),
            )
        )
    return found


def remove_leftovers(root: Path, *, older_than: timedelta = STALE_AFTER) -> list[Leftover]:
    removed = leftovers(root, older_than=older_than)
    for leftover in removed:
        if leftover.path.is_dir() and not leftover.path.is_symlink():
            shutil.rmtree(leftover.path, ignore_errors=True)
        else:
            leftover.path.unlink(missing_ok=True)
    return removed


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except FileNotFoundError:
                continue
    return total


# -- moving a run into place -----------------------------------------------------------------------


def commit(
    archive: Archive, folder: Path, record: RunRecord, findings: Sequence[Finding] | None
) -> RunRecord:
    """:meth:`Archive.commit`, for a checked staging ``folder``."""
    if not SAFE_ID.match(record.incident_id):
        raise ArchiveError(
            f"incident {record.incident_id!r} is not a valid id (letters, digits, '.', '_', '-')"
        )
    incident_dir = archive.root / record.incident_id
    if not record.host:
        record = record.model_copy(update=ran_by())
    try:
        if findings is not None:
            write_findings(folder, record, findings)
        found = read_findings(folder)
        incident_dir.mkdir(parents=True, exist_ok=True)
    except (ArchiveError, OSError) as exc:
        raise not_archived(archive.root, folder, exc) from exc
    connection: sqlite3.Connection | None = None
    try:
        connection = archive.index_file.connect()
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        if connection is not None:
            connection.close()
        # The run is kept all the same; the id is then unique by the folders alone.
        final = _move_into_place(archive, folder, record, incident_dir, None)
        raise index_failed(final.path, archive.index_file.label, exc) from exc
    try:
        # Under the write lock: no cooperating writer can take the same run id meanwhile.
        final = _move_into_place(archive, folder, record, incident_dir, connection)
        index.insert_run(connection, final, found, archive.root)
        connection.execute("COMMIT")
        return final
    except sqlite3.Error as exc:
        index.rollback(connection)
        raise index_failed(final.path, archive.index_file.label, exc) from exc
    finally:
        connection.close()


def not_archived(root: Path, folder: Path, exc: Exception) -> ArchiveError:
    kept = salvage(root, folder)
    again = (
        f"; the alert is kept in {kept}: free space, then `workbook run --alert {kept}`"
        if kept
        else ""
    )
    return ArchiveError(f"nothing was archived: {exc}{again}")


def index_failed(path: Path, index_path: Path | str, exc: sqlite3.Error) -> ArchiveError:
    return ArchiveError(
        f"{path} is written but the index {index_path} could not be updated ({exc}); "
        "run `workbook reindex` to rebuild it from the folders"
    )


def _move_into_place(
    archive: Archive,
    folder: Path,
    record: RunRecord,
    incident_dir: Path,
    connection: sqlite3.Connection | None,
) -> RunRecord:
    root, objects = archive.root, archive.objects
    base = f"{record.started_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{slug(record.runbook)}"
    for attempt in range(1, 1000):
        run_id = base if attempt == 1 else f"{base}-{attempt}"
        relative = f"{record.incident_id}/{run_id}"
        if _run_id_taken(root, run_id, connection) or (
            objects is not None and objects.run_exists(relative)
        ):
            continue
        final = record.model_copy(update={"run_id": run_id, "path": incident_dir / run_id})
        try:
            write_record(folder, final)
            if objects is not None:  # the bucket is the truth: the run exists once uploaded
                objects.publish_run(folder, relative)
        except ArchiveError as exc:
            raise not_archived(root, folder, exc) from exc
        try:
            # Atomic on one filesystem; refuses a non-empty target, so a lost race retries.
            os.rename(folder, final.path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                if objects is not None:  # published: the cache already fetched this very run
                    discard(folder)
                    return final
                continue
            raise ArchiveError(f"cannot move the run into {final.path}: {exc}") from exc
        return final
    raise ArchiveError(f"too many runs named {base} in {incident_dir}")


def _run_id_taken(root: Path, run_id: str, connection: sqlite3.Connection | None) -> bool:
    if connection is not None:
        with suppress(sqlite3.Error):  # then the folders alone decide
            if index.select_run(connection, run_id) is not None:
                return True
    return any(root.glob(f"*/{run_id}"))
