"""The archive in an object store (``s3://bucket/prefix``), through fsspec and s3fs.

An object store has no rename, so a run is published object by object, its ``run.json`` last:
``run.json`` is the commit marker, and a run folder without one (a worker killed while
uploading) is invisible to every reader and removed by ``prune`` once it is old. Layout, under
the prefix, as in a local archive::

    <incident_id>/<run_id>/...       the run's files; run.json written last
    <incident_id>/.notes/<id>.json   one object per note (an object cannot be appended to)
    <incident_id>/resolved.json      when the incident's alert resolved

Endpoint and region come from the config (``archive: {url, endpoint_url, region}``) or the usual
AWS variables (``AWS_ENDPOINT_URL``, ``AWS_REGION``); credentials only from the environment (or
the AWS files), never from the URL or the config, so they reach no artifact, log or message.
This module moves bytes only; :mod:`workbooks.archive.mirror` keeps the local cache in step.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workbooks.archive.records import RESOLVED_FILE, RUN_FILE, SAFE_ID
from workbooks.core.errors import ArchiveError, ConfigError
from workbooks.core.redact import redact_url

NOTES_PREFIX = ".notes"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_url(location: str | Path) -> bool:
    """Whether an archive location names an object store rather than a folder."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def default_cache(url: str) -> Path:
    """Where a host keeps its cache of ``url``: ``$XDG_CACHE_HOME/workbooks/archives/<name>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = re.sub(r"[^A-Za-z0-9-]+", "-", url.split("://", 1)[1]).strip("-")[:60]
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return base / "workbooks" / "archives" / f"{name}-{digest}"


@dataclass(frozen=True, kw_only=True)
class Listing:
    """What one listing of the bucket found, keyed by paths relative to the prefix."""

    runs: dict[str, datetime] = field(default_factory=dict)  # "<incident>/<run>": marker time
    uncommitted: dict[str, datetime] = field(default_factory=dict)  # no marker: newest object
    notes: dict[str, list[str]] = field(default_factory=dict)  # incident -> note object keys
    resolved: set[str] = field(default_factory=set)  # incidents with a resolved.json
    bytes: int = 0


class ObjectStore:
    """One ``scheme://bucket/prefix``: upload, list, download and delete run folders."""

    def __init__(
        self, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            raise ConfigError(
                "the archive URL must not carry credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the environment, and give the URL as s3://bucket/prefix"
            )
        if not parts.netloc:
            raise ConfigError(f"archive URL {url!r} names no bucket: use s3://bucket/prefix")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.base = f"{parts.netloc}{parts.path.rstrip('/')}"
        self.protocol = parts.scheme
        options: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        if region:
            options["client_kwargs"] = {"region_name": region}
        try:
            import fsspec

            self.fs = fsspec.filesystem(self.protocol, **options)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"cannot open the archive {self.url}: {_scrub(str(exc))}; an s3:// archive "
                "needs the s3fs package (pip install s3fs)"
            ) from exc

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def key(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    def fail(self, doing: str, exc: Exception) -> ArchiveError:
        """An error that says what failed, with nothing secret in it (redacted all the same)."""
        return ArchiveError(
            f"cannot {doing} in the archive {self.url}: {_scrub(str(exc)) or type(exc).__name__}"
            "; check the endpoint, the bucket and the AWS credentials in the environment"
        )

    # -- writing -----------------------------------------------------------------------------

    def run_exists(self, relative: str) -> bool:
        """Whether any object lies under ``<relative>/``: a run id another host took, or one a
        dead worker was uploading (its partial objects must not be mixed with a new run's)."""
        try:
            return bool(self.fs.find(self.key(relative), maxdepth=None, withdirs=False))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self.fail(f"look for {relative}", exc) from exc

    def publish_run(self, folder: Path, relative: str) -> None:
        """Upload a staged run folder, ``run.json`` last: the run exists once that is written."""
        files = sorted(
            path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()
        )
        marker = folder / RUN_FILE
        if marker not in files:
            raise ArchiveError(f"{folder} has no {RUN_FILE}: nothing to publish")
        files.remove(marker)
        try:
            for path in [*files, marker]:
                self.fs.put_file(str(path), self.key(f"{relative}/{path.relative_to(folder)}"))
        except (OSError, ValueError) as exc:
            raise self.fail(f"upload the run {relative}", exc) from exc

    def put_text(self, relative: str, text: str) -> None:
        try:
            self.fs.pipe_file(self.key(relative), text.encode("utf-8"))
        except (OSError, ValueError) as exc:
            raise self.fail(f"write {relative}", exc) from exc

    def delete_run(self, relative: str) -> None:
        """Delete a run: its marker first, so it is never seen half-deleted."""
        try:
            self.fs.rm_file(self.key(f"{relative}/{RUN_FILE}"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self.fail(f"delete {relative}", exc) from exc
        self.delete_tree(relative)

    def delete_tree(self, relative: str) -> None:
        try:
            keys = self.fs.find(self.key(relative))
            if keys:
                self.fs.rm(keys)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.fail(f"delete {relative}", exc) from exc

    def delete_files(self, relatives: Iterable[str]) -> None:
        keys = [self.key(relative) for relative in relatives]
        try:
            if keys:
                self.fs.rm(keys)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self.fail("delete files", exc) from exc

    # -- reading -----------------------------------------------------------------------------

    def listing(self) -> Listing:
        """One listing of everything under the prefix (paged by the store, not by us)."""
        try:
            found = self.fs.find(self.base, detail=True)
        except FileNotFoundError:
            return Listing()
        except OSError as exc:
            raise self.fail("list the runs", exc) from exc
        runs: dict[str, datetime] = {}
        newest: dict[str, datetime] = {}
        notes: dict[str, list[str]] = {}
        resolved: set[str] = set()
        total = 0
        for key, info in found.items():
            relative = key[len(self.base) + 1 :]
            parts = relative.split("/")
            total += int(info.get("size") or 0)
            if not parts or not SAFE_ID.match(parts[0]):
                continue  # not an incident of ours (or .staging-like names): ignored
            modified = _modified(info)
            if len(parts) == 2 and parts[1] == RESOLVED_FILE:
                resolved.add(parts[0])
            elif len(parts) == 3 and parts[1] == NOTES_PREFIX:
                notes.setdefault(parts[0], []).append(relative)
            elif len(parts) >= 3 and SAFE_ID.match(parts[1]):
                run = f"{parts[0]}/{parts[1]}"
                if len(parts) == 3 and parts[2] == RUN_FILE:
                    runs[run] = modified
                newest[run] = max(newest.get(run, modified), modified)
        uncommitted = {run: when for run, when in newest.items() if run not in runs}
        return Listing(
            runs=runs, uncommitted=uncommitted, notes=notes, resolved=resolved, bytes=total
        )

    def fetch_tree(self, relative: str, target: Path) -> None:
        """Download every object under ``<relative>/`` into the folder ``target``."""
        prefix = self.key(relative)
        try:
            for key in self.fs.find(prefix):
                local = target / key[len(prefix) + 1 :]
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(key, str(local))
        except (OSError, ValueError) as exc:
            raise self.fail(f"download {relative}", exc) from exc

    def read_text(self, relative: str) -> str:
        try:
            return self.fs.cat_file(self.key(relative)).decode("utf-8")
        except (OSError, ValueError) as exc:
            raise self.fail(f"read {relative}", exc) from exc


# Never echoed: an error from the store is scrubbed of them before anyone reads it.
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def _scrub(text: str) -> str:
    """``text`` without the AWS credentials' values and without URL userinfo or tokens."""
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", lambda found: redact_url(found.group()), text)


def _modified(info: dict[str, Any]) -> datetime:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.now(UTC)
