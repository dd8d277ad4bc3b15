"""The local cache of an object-store archive: what this host's readers read.

The bucket is the truth (:mod:`workbooks.archive.objects`). Each host keeps a cache folder laid
out like a local archive (``<cache>/<incident>/<run>/...``), so reports, replay, notes, the pages
and evidence links read plain files. With no database the cache also holds this host's SQLite
index, rebuilt from the bucket: :meth:`Mirror.refresh` lists the bucket (at most every
``refresh_seconds``), downloads the committed runs it lacks, forgets the runs deleted there, and
picks up notes and resolutions written by other hosts. A run without its commit marker is never
listed, so never downloaded: readers cannot see a half-written run.

A run is downloaded into ``<cache>/.staging`` and moved into place with one rename, as in a
local archive, so a cached run folder is whole or absent too.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from workbooks.archive import index, staging
from workbooks.archive.objects import NOTES_PREFIX, Listing, ObjectStore
from workbooks.archive.records import (
    RESOLVED_FILE,
    RUN_FILE,
    STAGING_DIR,
    Note,
    append_note,
    read_findings,
    read_notes,
    read_record,
    read_resolved,
    write_atomically,
)
from workbooks.core.errors import ArchiveError

if TYPE_CHECKING:  # the store calls in here with itself; only its public face is used
    from workbooks.archive.store import Archive

# How stale a host's view of the bucket may be: the listing is one request per 1,000 objects.
REFRESH_SECONDS = 2.0
log = logging.getLogger(__name__)


class Mirror:
    """Keeps the cache folder ``root`` in step with ``objects``; safe across threads."""

    def __init__(
        self, objects: ObjectStore, root: Path, *, refresh_seconds: float = REFRESH_SECONDS
    ) -> None:
        self.objects = objects
        self.root = root
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._refreshed = float("-inf")
        self.last_listing: Listing | None = None

    def refresh(self, archive: Archive, *, force: bool = False, update_index: bool = True) -> None:
        """Bring the cache (and, ``update_index``, the index) up to the bucket's committed runs."""
        if not force and time.monotonic() - self._refreshed < self.refresh_seconds:
            return
        with self._lock:
            if not force and time.monotonic() - self._refreshed < self.refresh_seconds:
                return
            # The cache first, then the bucket: a run this host commits meanwhile is already in
            # the bucket when listed, so it is never mistaken for one deleted there.
            cached = self.cached_runs()
            listing = self.objects.listing()
            fetched = [run for run in sorted(listing.runs) if run not in cached and self.fetch(run)]
            gone = sorted(set(cached) - set(listing.runs))
            notes = self._new_notes(listing)
            resolved = self._new_resolutions(listing)
            for run in gone:
                self._drop(run)
            if update_index:
                self._index(archive, fetched, gone, cached, notes, resolved)
            self.last_listing = listing
            self._refreshed = time.monotonic()

    def cached_runs(self) -> dict[str, str]:
        """``<incident>/<run>`` -> run id, for every run folder in the cache."""
        return {
            f"{marker.parts[-3]}/{marker.parts[-2]}": marker.parts[-2]
            for marker in self.root.glob(f"[!.]*/[!.]*/{RUN_FILE}")
        }

    def fetch(self, run: str) -> bool:
        """Download one committed run into the cache; False if it vanished meanwhile."""
        target = self.root / run
        if (target / RUN_FILE).is_file():
            return True
        folder = self.root / STAGING_DIR / staging.owned_name("fetch-")
        try:
            folder.mkdir(parents=True)
            self.objects.fetch_tree(run, folder)
            if not (folder / RUN_FILE).is_file():
                return False  # deleted meanwhile (a prune elsewhere)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, target)
            return True
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return True  # another process of this host fetched it first
            raise ArchiveError(f"cannot copy {run} into the cache {self.root}: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _drop(self, run: str) -> None:
        trash = self.root / STAGING_DIR / staging.owned_name("gone-")
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root / run, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
        incident = self.root / run.split("/")[0]
        if not any(incident.glob(f"[!.]*/{RUN_FILE}")):
            shutil.rmtree(incident, ignore_errors=True)

    def _new_notes(self, listing: Listing) -> list[Note]:
        added = []
        for incident, keys in sorted(listing.notes.items()):
            folder = self.root / incident
            if not folder.is_dir():
                continue  # notes of an incident with no committed run yet
            known = {note.note_id for note in read_notes(folder)}
            for key in sorted(keys):
                if Path(key).stem in known:
                    continue
                try:
                    note = Note.model_validate_json(self.objects.read_text(key))
                except (ArchiveError, ValueError) as exc:
                    log.warning("note %s left out: %s", key, exc)
                    continue
                append_note(folder, note)
                added.append(note)
        return added

    def _new_resolutions(self, listing: Listing) -> list[tuple[str, datetime]]:
        found = []
        for incident in sorted(listing.resolved):
            folder = self.root / incident
            if not folder.is_dir() or (folder / RESOLVED_FILE).is_file():
                continue
            try:
                text = self.objects.read_text(f"{incident}/{RESOLVED_FILE}")
                json.loads(text)
            except (ArchiveError, ValueError):
                continue
            write_atomically(folder / RESOLVED_FILE, text)
            if (resolved := read_resolved(folder)) is not None:
                found.append(resolved)
        return found

    def _index(
        self,
        archive: Archive,
        fetched: list[str],
        gone: list[str],
        cached: dict[str, str],
        notes: list[Note],
        resolved: list[tuple[str, datetime]],
    ) -> None:
        if not (fetched or gone or notes or resolved) and archive.index_file.exists():
            return
        with archive.writing() as connection:
            for run in fetched:
                folder = self.root / run
                try:
                    index.insert_run(
                        connection, read_record(folder), read_findings(folder), self.root
                    )
                except ArchiveError as exc:
                    log.warning("run %s left out of the index: %s", run, exc)
            for run in gone:
                index.delete_run(connection, cached[run])
                incident = run.split("/")[0]
                if not (self.root / incident).is_dir():
                    index.delete_incident(connection, incident)
            for note in notes:
                index.insert_note(connection, note)
            for incident, ended_at in resolved:
                index.set_resolved(connection, incident, ended_at)

    # -- writing through to the bucket -----------------------------------------------------------

    def publish_note(self, note: Note) -> None:
        self.objects.put_text(
            f"{note.incident_id}/{NOTES_PREFIX}/{note.note_id}.json", note.model_dump_json()
        )

    def publish_resolved(self, incident_dir: Path) -> None:
        text = (incident_dir / RESOLVED_FILE).read_text(encoding="utf-8")
        self.objects.put_text(f"{incident_dir.name}/{RESOLVED_FILE}", text)

    def uncommitted(self, *, older_than: timedelta) -> list[tuple[str, datetime]]:
        """Run folders in the bucket without a commit marker, untouched for ``older_than``: a
        worker died while uploading them. ``prune`` deletes them."""
        listing = self.objects.listing()
        cutoff = datetime.now().astimezone() - older_than
        return sorted((run, when) for run, when in listing.uncommitted.items() if when < cutoff)
