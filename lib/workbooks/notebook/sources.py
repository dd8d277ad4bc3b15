"""Where a workbook's numbers come from: a live Prometheus, or evidence saved by an earlier run.

Every source answers :meth:`Source.range_query` with a long frame: a tz-aware UTC ``timestamp``
column, one string column per label, and a float ``value`` column. Whatever a workbook reads is
saved by an :class:`EvidenceWriter` (Parquet plus a manifest of query text, window and step), and
an :class:`EvidenceSource` over that folder replays it exactly, long after Prometheus dropped it.

Errors from requests and prometheus-api-client are wrapped here, and only here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import (
    ConfigError,
    EvidenceMissingError,
    QueryFailedError,
    SourceUnavailableError,
)
from workbooks.core.paths import DEMO_EVIDENCE_DIR, demo_dir
from workbooks.core.redact import redact_url

# The rule that chooses a run's source is in source_spec.py, without pandas, for the commands.
from .source_spec import CONFIGURED_PROMETHEUS, DEMO_SOURCE

MANIFEST = "manifest.json"
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
    return pd.DataFrame(
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
    return len(frame[labels].drop_duplicates()) if labels else 1


class Points(NamedTuple):
    """One series' points as two float arrays: seconds since the epoch, and values."""

    stamps: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, pairs: list[list[Any]]) -> Points:
        """From Prometheus's ``[[1700000000, "0.25"], ...]`` (NaN and +Inf as it spells them)."""
        return cls(
            np.fromiter((pair[0] for pair in pairs), float, len(pairs)),
            np.fromiter((pair[1] for pair in pairs), float, len(pairs)),
        )


def matrix_series_hook(decoded: dict[str, Any]) -> dict[str, Any]:
    """``json.loads`` object hook: a matrix series' points become :class:`Points` as soon as
    that series is parsed, so a large answer never holds a Python list per point for all its
    series at once (one per series, briefly): a 7-day answer over 1,000 series took 136 MB
    of the kernel as lists, about 11 MB as arrays (benchmarks/week.py)."""
    points = decoded.get("values")
    if isinstance(points, list) and "metric" in decoded:
        decoded["values"] = Points.of(points)
    return decoded


# Decoding holds the GIL whichever thread does it; one answer at a time keeps only one answer's
# text and Python objects alive, at no cost in time (the HTTP waits still overlap).
_DECODING = threading.Lock()


def _decode_series_as_they_arrive(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A session response hook: prometheus-api-client's ``response.json()`` decodes with
    :func:`matrix_series_hook`, one answer at a time."""
    decode = functools.partial(response.json, object_hook=matrix_series_hook)

    def json_one_at_a_time(**options: Any) -> Any:
        with _DECODING:
            return decode(**options)

    response.json = json_one_at_a_time  # type: ignore[method-assign]


def frame_from_matrix(result: list[dict[str, Any]]) -> pd.DataFrame:
    """Prometheus's matrix result as a long frame (no data gives an empty frame, not an error).

    Built column by column, one array per series: a 7-day answer over 1,000 series is about
    700,000 points, and a Python object per point (a dict per row, as this once was) took
    hundreds of MB in the kernel (benchmarks/week.py).
    """
    if not result:
        return empty_frame()
    label_names: dict[str, None] = {}
    labels, stamps, values = [], [], []
    for series in result:
        own = {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
        label_names.update(dict.fromkeys(own))
        points = series.get("values", [])
        points = points if isinstance(points, Points) else Points.of(points)
        labels.append(own)
        stamps.append(points.stamps)
        values.append(points.values)
    lengths = [len(points) for points in stamps]
    columns: dict[str, Any] = {
        "timestamp": pd.to_datetime(np.concatenate(stamps), unit="s", utc=True).astype(
            "datetime64[ns, UTC]"
        )
    }
    rows = np.repeat(np.arange(len(labels)), lengths)  # each point's series
    for name in label_names:
        per_series = pd.Series([own.get(name, "") for own in labels], dtype=object).astype(str)
        columns[name] = per_series.take(rows).reset_index(drop=True)
    columns["value"] = np.concatenate(values)
    return pd.DataFrame(columns, copy=False)


class Source(Protocol):
    """Anything that answers range queries; ``description`` is safe to archive (no secrets)."""

    description: str
    window: Window | None  # a replay's recorded window; None for a live source

    def range_query(
        self, name: str, query: str, window: Window, step_seconds: int, *, role: str
    ) -> pd.DataFrame: ...


class PrometheusSource:
    """A live Prometheus through prometheus-api-client, every error wrapped in ours."""

    window = None

    def __init__(self, settings: PrometheusSettings, url: str | None = None) -> None:
        url = url or settings.url
        if not url:
            raise ConfigError(
                "no Prometheus URL: set WORKBOOKS_PROMETHEUS_URL, 'prometheus: url:' in the "
                "config file, or pass the URL as the source"
            )
        if urlsplit(url).username or urlsplit(url).password:
            raise ConfigError(
                "the Prometheus URL carries credentials; put them in "
                "WORKBOOKS_PROMETHEUS_USERNAME / WORKBOOKS_PROMETHEUS_PASSWORD instead, so they "
                "never reach an archived notebook"
            )
        self.url = url.rstrip("/")
        self.description = redact_url(self.url)
        self.timeout_seconds = settings.timeout_seconds
        session = requests.Session()
        session.hooks["response"].append(_decode_series_as_they_arrive)
        session.verify = settings.ca_bundle or settings.verify_tls
        headers = dict(settings.headers)
        if settings.bearer_token:
            headers["Authorization"] = f"Bearer {settings.bearer_token}"
        auth = (settings.username, settings.password or "") if settings.username else None
        # One quick retry on a 502-504; the client's default retries a 503 for ~6 s.
        # Never retry a read timeout: the wait would double and the error would read as a
        # connection failure instead of "too slow".
        retry = Retry(total=1, read=False, backoff_factor=0.2, status_forcelist=(502, 503, 504))
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers or None,
            auth=auth,
            retry=retry,
            session=session,
            timeout=self.timeout_seconds,
        )

    def range_query(
        self, name: str, query: str, window: Window, step_seconds: int, *, role: str = "current"
    ) -> pd.DataFrame:
        try:
            result = self._client.custom_query_range(
                query, start_time=window.start, end_time=window.end, step=f"{step_seconds}s"
            )
        except requests.exceptions.Timeout as exc:
            raise SourceUnavailableError(
                f"Prometheus at {self.description} did not answer {name!r} within "
                f"{self.timeout_seconds:g} s; raise WORKBOOKS_PROMETHEUS_TIMEOUT or check its load"
            ) from exc
        except requests.exceptions.RetryError as exc:
            raise SourceUnavailableError(
                f"Prometheus at {self.description} kept failing (5xx) on {name!r}; check its health"
            ) from exc
        except (requests.exceptions.JSONDecodeError, KeyError) as exc:
            # A proxy's login page, or JSON that is not Prometheus's ({"data": ...}).
            raise SourceUnavailableError(
                f"{self.description} did not answer like Prometheus ({type(exc).__name__}); "
                "check the URL (it is the base URL, without /api/v1)"
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise SourceUnavailableError(
                f"TLS with Prometheus at {self.description} failed ({exc}); set "
                "WORKBOOKS_PROMETHEUS_CA_BUNDLE to its CA file"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise SourceUnavailableError(
                f"Prometheus at {self.description} is unreachable ({type(exc).__name__}); check "
                "WORKBOOKS_PROMETHEUS_URL and that Prometheus is up"
            ) from exc
        except PrometheusApiClientException as exc:
            message = str(exc)
            if re.search(r"HTTP Status Code (401|403)", message):
                raise SourceUnavailableError(
                    f"Prometheus at {self.description} refused our credentials ({message[:120]}); "
                    "check WORKBOOKS_PROMETHEUS_TOKEN or USERNAME/PASSWORD"
                ) from exc
            if re.search(r"HTTP Status Code 5\d\d", message):
                raise SourceUnavailableError(
                    f"Prometheus at {self.description} failed on {name!r}: {message[:200]}"
                ) from exc
            raise QueryFailedError(
                f"Prometheus rejected query {name!r} ({query}): {message[:300]}"
            ) from exc
        with _DECODING:
            return frame_from_matrix(result)


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
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1, sort_keys=True)
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
        _write_json_atomic(folder / MANIFEST, manifest)

    def save(
        self,
        *,
        name: str,
        role: str,
        query: str,
        window: Window,
        step_seconds: int,
        frame: pd.DataFrame,
    ) -> None:
        file_name = f"{_file_stem(name)}.{role}.parquet"
        frame.to_parquet(self.folder / file_name, index=False)
        pyarrow.default_memory_pool().release_unused()  # a large answer's buffers, given back
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
        _write_json_atomic(self.folder / MANIFEST, self._manifest)


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
        for entry in self._manifest["entries"]:
            if (entry["name"], entry["role"]) != (name, role):
                continue
            if entry["query"] != query:
                raise EvidenceMissingError(
                    f"the evidence for {name!r} was recorded with a different query "
                    f"({entry['query']}); to run a changed query, point source at Prometheus"
                )
            frame = pd.read_parquet(self.folder / entry["file"])
            if len(frame):
                frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
            return frame if len(frame) else empty_frame()
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
    if spec in (CONFIGURED_PROMETHEUS, ""):
        return PrometheusSource(settings)
    if spec.startswith(("http://", "https://")):
        return PrometheusSource(settings, url=spec)
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
