"""Where a workbook's numbers come from: a live Prometheus, or evidence saved by an earlier run.

Every source answers :meth:`Source.range_query` with a long frame: a tz-aware UTC ``timestamp``
column, one string column per label, and a float ``value`` column. Whatever a workbook reads is
saved by an :class:`EvidenceWriter` (Parquet plus a manifest of query text, window and step), and
an :class:`EvidenceSource` over that folder replays it exactly, long after Prometheus dropped it.

A live Prometheus is :mod:`workbooks.notebook.prometheus`, imported only by a run that queries
one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import ConfigError, EvidenceMissingError
from workbooks.core.paths import DEMO_EVIDENCE_DIR, demo_dir

# The rule that chooses a run's source is in source_spec.py, without pandas, for the commands.
from .source_spec import CONFIGURED_PROMETHEUS, DEMO_SOURCE

MANIFEST = "manifest.json"
_PYARROW_VALUES_WARNING = r"(Series|DatetimeIndex)\.values returning an ndarray that drops"
_NICE_STEPS_SECONDS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def shifted(self, offset: timedelta) -> Window:
        return Window(self.start - offset, self.end - offset)


def choose_step(window: Window, *, max_points: int = 1000, min_step_seconds: int = 30) -> int:
    """Seconds between points so one series stays under ``max_points`` (Prometheus caps 11,000)."""
    needed = max(window.duration.total_seconds() / max_points, min_step_seconds)
    for step in _NICE_STEPS_SECONDS:
        if step >= needed:
            return step
    return math.ceil(needed)


def empty_frame() -> pd.DataFrame:
    """A new empty result: a copy of one built once (building it is 15x the copy, and every
    query's result starts as one; docs/performance.md, fifteenth pass)."""
    return _EMPTY_FRAME.copy()


_EMPTY_FRAME = pd.DataFrame(
    {
        "timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
        "value": pd.Series([], dtype=float),
    }
)


def series_count(frame: pd.DataFrame) -> int:
    """How many series a long frame holds (one when it carries no labels)."""
    if frame.empty:
        return 0
    labels = [column for column in frame.columns if column not in ("timestamp", "value")]
    # Counting groups, not dropping duplicate rows: 4x quicker, and asked of every result.
    return frame.groupby(labels, sort=False, dropna=False).ngroups if labels else 1


class Source(Protocol):
    """Anything that answers range queries; ``description`` is safe to archive (no secrets)."""

    description: str
    window: Window | None  # a replay's recorded window; None for a live source

    def range_query(
        self, name: str, query: str, window: Window, step_seconds: int, *, role: str
    ) -> pd.DataFrame: ...


def _file_stem(name: str) -> str:
    """A readable, collision-free file name for a query's evidence."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:80] or "query"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {"entries": []}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".tmp")
    # One write: json.dump writes each token on its own (20 entries: 0.53 -> 0.34 ms a save).
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(json.dumps(data, indent=1, sort_keys=True))
    os.replace(temporary, path)


class EvidenceWriter:
    """Saves each result a workbook used, so the run can be replayed without Prometheus."""

    def __init__(self, folder: Path, *, window: Window, source: str) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = _read_manifest(folder)
        manifest.update(
            window={"start": window.start.isoformat(), "end": window.end.isoformat()},
            source=source,
        )
        self._manifest = manifest
        self._held = 0  # > 0 inside together(): the manifest is written when it ends
        _write_json_atomic(folder / MANIFEST, manifest)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Results saved inside are entered in the manifest with one write, at the end (a
        query's window and its baseline), even if the block fails: a save's files are never
        left out of it."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                _write_json_atomic(self.folder / MANIFEST, self._manifest)

    @staticmethod
    def _write(frame: pd.DataFrame, path: Path) -> None:
        from pyarrow import parquet  # here, as in to_parquet: only a kernel that saves loads it

        # The file pandas' to_parquet writes, byte for byte, without a thread per column: for
        # a result's three to six columns the threads cost more than the conversion (2.1 ->
        # 1.2 ms a result; docs/performance.md). The warning is the one to_parquet hides too
        # (pyarrow before 26 reads a tz-aware column's .values; pandas GH#68426).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _PYARROW_VALUES_WARNING)
            table = pyarrow.Table.from_pandas(frame, preserve_index=False, nthreads=1)
        parquet.write_table(table, path)
        pyarrow.default_memory_pool().release_unused()  # a large answer's buffers, given back

    def save(
        self,
        *,
        name: str,
        role: str,
        query: str,
        window: Window,
        step_seconds: int,
        frame: pd.DataFrame,
        recorded: Path | None = None,
    ) -> int:
        """Save one result and enter it in the manifest; returns its series count.

        ``recorded`` is the file ``frame`` was read from, when it is replayed evidence
        (:meth:`EvidenceSource.recorded_file`): it is copied as it is, the very evidence the
        run used, instead of written again from the frame (20 results: 38 -> 2 ms).
        """
        file_name = f"{_file_stem(name)}.{role}.parquet"
        if recorded is not None:
            shutil.copyfile(recorded, self.folder / file_name)
        else:
            self._write(frame, self.folder / file_name)
        entry = {
            "name": name,
            "role": role,
            "query": query,
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "step_seconds": step_seconds,
            "file": file_name,
            "series": series_count(frame),
            "points": len(frame),
        }
        entries = [e for e in self._manifest["entries"] if (e["name"], e["role"]) != (name, role)]
        self._manifest["entries"] = [*entries, entry]
        if not self._held:
            _write_json_atomic(self.folder / MANIFEST, self._manifest)
        return entry["series"]


class EvidenceSource:
    """Replays a folder of saved evidence: same queries, same window, no Prometheus."""

    def __init__(self, folder: Path, *, description: str | None = None) -> None:
        self.folder = folder
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            raise EvidenceMissingError(
                f"{folder} holds no evidence ({MANIFEST} is missing); point source at an "
                "archived run's evidence folder, 'demo', or a Prometheus URL"
            )
        self._manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self.description = description or str(folder)
        window = self._manifest.get("window")
        self.window = (
            Window(datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"]))
            if window
            else None
        )
        self.recorded_from = self._manifest.get("source", "unknown")

    def range_query(
        self, name: str, query: str, window: Window, step_seconds: int, *, role: str = "current"
    ) -> pd.DataFrame:
        frame = pd.read_parquet(self.recorded_file(name, query, role=role))
        if len(frame):
            frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
        return frame if len(frame) else empty_frame()

    def recorded_file(self, name: str, query: str, *, role: str = "current") -> Path:
        """The file that holds the ``role`` result of ``name``; raises
        :class:`EvidenceMissingError` if there is none, or it was recorded for another query."""
        for entry in self._manifest["entries"]:
            if (entry["name"], entry["role"]) != (name, role):
                continue
            if entry["query"] != query:
                raise EvidenceMissingError(
                    f"the evidence for {name!r} was recorded with a different query "
                    f"({entry['query']}); to run a changed query, point source at Prometheus"
                )
            return self.folder / entry["file"]
        held = ", ".join(sorted({e["name"] for e in self._manifest["entries"]})) or "nothing"
        raise EvidenceMissingError(
            f"the evidence in {self.description} holds no {role} result for {name!r} (it holds: "
            f"{held}); replays can only repeat the queries of the original run"
        )


def demo_evidence_dir(runbook: str) -> Path:
    return demo_dir(runbook) / DEMO_EVIDENCE_DIR


def open_source(spec: str, *, runbook: str, settings: PrometheusSettings) -> Source:
    """``demo``, ``prometheus`` (the configured URL), an http(s) URL, or an evidence folder."""
    spec = (spec or "").strip()
    if spec == DEMO_SOURCE:
        return EvidenceSource(demo_evidence_dir(runbook), description=f"demo evidence ({runbook})")
    given_url = spec.startswith(("http://", "https://"))
    if given_url or spec in (CONFIGURED_PROMETHEUS, ""):
        from .prometheus import PrometheusSource  # requests and its client: a live source only

        return PrometheusSource(settings, url=spec if given_url else None)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return EvidenceSource(folder)
    raise ConfigError(
        f"source {spec!r} is neither 'demo', 'prometheus', an http(s) URL nor an evidence folder"
    )


def utc(moment: datetime | str) -> datetime:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
