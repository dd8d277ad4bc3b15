"""Notes and resolutions: what people and Alertmanager add to an incident after its runs.

Each is written to the incident's folder first (``notes.jsonl``, ``resolved.json``), so it
survives a lost index, reindex and new runs; in an object-store archive to the bucket before
that (:class:`workbooks.archive.mirror.Mirror`), so every host sees it; then it is indexed.
:class:`workbooks.archive.store.Archive` calls into this module with itself.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbooks.archive import index, staging
from workbooks.archive.records import SAFE_ID, Note, append_note, write_resolved
from workbooks.core.errors import ArchiveError

if TYPE_CHECKING:  # the store calls in here with itself; only its public face is used
    from workbooks.archive.store import Archive


def add_note(archive: Archive, incident_id: str, text: str, *, author: str) -> Note:
    """:meth:`Archive.add_note`."""
    if not text.strip():
        raise ArchiveError("a note needs some text: say what was done and what came of it")
    if not (SAFE_ID.match(incident_id) and archive.has_runs(incident_id)):
        incident_id = archive.get(incident_id).incident_id  # a run id; else RunNotFoundError
    note = Note(
        note_id=uuid.uuid4().hex[:16],
        incident_id=incident_id,
        created_at=datetime.now(UTC),
        author=author.strip() or "unknown",
        text=text.strip(),
    )
    if archive.mirror is not None:  # the bucket first: it is the truth
        archive.mirror.publish_note(note)
    path = append_note(archive.root / incident_id, note)
    update_index(archive, path, lambda connection: index.insert_note(connection, note))
    return note


def mark_resolved(archive: Archive, incident_id: str, ended_at: datetime) -> bool:
    """:meth:`Archive.mark_resolved`."""
    if not SAFE_ID.match(incident_id) or not archive.has_runs(incident_id):
        return False
    path = write_resolved(archive.root / incident_id, ended_at)
    if archive.mirror is not None:
        archive.mirror.publish_resolved(path.parent)
    update_index(
        archive, path, lambda connection: index.set_resolved(connection, incident_id, ended_at)
    )
    return True


def update_index(archive: Archive, path: Path, change: Callable[[Any], object]) -> None:
    """Apply ``change`` to the index; if it cannot be, say that ``path`` is kept all the same."""
    try:
        with archive.writing() as connection:
            change(connection)
    except sqlite3.Error as exc:
        raise staging.index_failed(path, archive.index_file.label, exc) from exc
