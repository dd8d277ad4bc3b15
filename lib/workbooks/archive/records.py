"""What the archive's files hold, and the one reader and writer of each.

The names of the files in an incident folder and a run folder, the records they hold
(:class:`RunRecord` in ``run.json``, :class:`Note` lines in ``notes.jsonl``), and the functions
that read and write them: :func:`write_record` is the only writer of ``run.json`` and
:func:`write_findings` the only writer of ``findings.json``, whoever builds the run (the runner,
retention). :mod:`workbooks.archive.store`, :mod:`workbooks.archive.index` and
:mod:`workbooks.archive.retention` build on this module; it imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbooks.core.errors import ArchiveError
from workbooks.core.findings import SEVERITIES, Finding, ranked

INDEX_FILE = "index.sqlite"
STAGING_DIR = ".staging"
RUN_FILE = "run.json"
FINDINGS_FILE = "findings.json"
ALERT_FILE = "alert.json"
NOTEBOOK_FILE = "workbook.ipynb"
EVIDENCE_DIR = "evidence"
NOTES_FILE = "notes.jsonl"
RESOLVED_FILE = "resolved.json"

# Bounded: a longer name is no id of ours, and the filesystem would refuse it (ENAMETOOLONG).
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


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
    # Who ran it: the host and the worker (``workbook worker --name``, else the process id).
    host: str = ""
    worker: str = ""

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


_worker_name: str | None = None


def set_worker_name(name: str | None) -> None:
    """Name this process's worker in the runs it archives (``workbook worker --name``)."""
    global _worker_name
    _worker_name = name or None


def ran_by() -> dict[str, str]:
    """``{"host", "worker"}`` for a run archived by this process: its log line and run.json."""
    return {"host": socket.gethostname(), "worker": _worker_name or f"pid {os.getpid()}"}


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` whole or not at all (a partial file, then one rename)."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ArchiveError(f"cannot write {path}: {exc}") from exc


def read_record(run_dir: Path) -> RunRecord:
    try:
        record = RunRecord.model_validate_json((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read the run record in {run_dir}: {exc}") from exc
    # The folder may have moved with the archive: where it is now wins.
    return record.model_copy(update={"path": run_dir})


def read_findings(run_dir: Path) -> list[Finding]:
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


def read_notes(incident_dir: Path) -> list[Note]:
    try:
        lines = (incident_dir / NOTES_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ArchiveError(f"cannot read {incident_dir / NOTES_FILE}: {exc}") from exc
    notes: dict[str, Note] = {}
    for line in lines:
        with suppress(ValueError):  # a line cut short by a crash: the others still count
            note = Note.model_validate_json(line)
            # Once each: an object-store archive's cache may be handed the same note twice.
            notes.setdefault(note.note_id, note)
    return sorted(notes.values(), key=lambda note: (note.created_at, note.note_id))


def read_resolved(incident_dir: Path) -> tuple[str, datetime] | None:
    try:
        document = json.loads((incident_dir / RESOLVED_FILE).read_text(encoding="utf-8"))
        ended_at = datetime.fromisoformat(document["ended_at"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return incident_dir.name, ended_at


def write_record(run_dir: Path, record: RunRecord) -> None:
    """Write ``run.json``: the only writer of it."""
    text = json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    write_atomically(run_dir / RUN_FILE, text)


def findings_document(record: RunRecord, findings: Sequence[Finding]) -> dict[str, Any]:
    """What ``findings.json`` holds: the run's outcome and its findings, most important first."""
    return {
        "incident": record.incident_id,
        "runbook": record.runbook,
        "status": record.status,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "findings": [finding.to_dict() for finding in ranked(findings)],
    }


def write_findings(run_dir: Path, record: RunRecord, findings: Sequence[Finding]) -> None:
    """Write ``findings.json``: the only writer of it. :class:`ArchiveError` if it cannot."""
    text = json.dumps(findings_document(record, findings), indent=2, ensure_ascii=False) + "\n"
    write_atomically(run_dir / FINDINGS_FILE, text)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def append_note(incident_dir: Path, note: Note) -> Path:
    """Append a note to ``notes.jsonl``: the only writer of it. Returns its path."""
    path = incident_dir / NOTES_FILE
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
    return path


def write_resolved(incident_dir: Path, ended_at: datetime) -> Path:
    """Write ``resolved.json``: when the incident's alert resolved. Returns its path."""
    path = incident_dir / RESOLVED_FILE
    document = {
        "incident_id": incident_dir.name,
        "ended_at": _iso(ended_at),
        "recorded_at": _iso(datetime.now(UTC)),
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")
    return path
