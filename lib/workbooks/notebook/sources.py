"""Where a workbook's numbers come from: a live Prometheus, or evidence saved by an earlier run.

Every source answers :meth:`Source.range_query` with a long frame: a tz-aware UTC ``timestamp``
column, one string column per label, and a float ``value`` column. Whatever a workbook reads is
saved by an :class:`EvidenceWriter` (Parquet plus a manifest of query text, window and step), and
an :class:`EvidenceSource` over that folder replays it exactly, long after Prometheus dropped it.

Errors from requests and prometheus-api-client are wrapped here, and only here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pandas as pd
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import (
    ArchiveError,
    ConfigError,
    EvidenceMissingError,
    QueryFailedError,
    SourceUnavailableError,
)
from workbooks.core.paths import DEMO_EVIDENCE_DIR, demo_dir
from workbooks.core.redact import redact_url, refuse_credentials

MANIFEST = "manifest.json"
# The two named sources; anything else is an http(s) URL or an evidence folder.
DEMO_SOURCE = "demo"  # the runbook's bundled demo evidence, offline
CONFIGURED_PROMETHEUS = "prometheus"  # the configured URL and credentials, read in the kernel
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


def frame_from_matrix(result: list[dict[str, Any]]) -> pd.DataFrame:
    """Prometheus's matrix result as a long frame (no data gives an empty frame, not an error)."""
    if not result:
        return empty_frame()
    rows: list[dict[str, Any]] = []
    label_names: dict[str, None] = {}
    for series in result:
        labels = {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
        label_names.update(dict.fromkeys(labels))
        for timestamp, value in series.get("values", []):
            rows.append({"timestamp": float(timestamp), **labels, "value": float(value)})
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True).astype(
        "datetime64[ns, UTC]"
    )
    for name in label_names:
        frame[name] = frame[name].fillna("").astype(str)
    return frame[["timestamp", *label_names, "value"]]


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


def choose_source(
    *,
    url: str | None = None,
    evidence: Path | None = None,
    settings: PrometheusSettings,
    instead: str = "pass --prometheus URL or --evidence DIR",
) -> str:
    """The ``source`` parameter of a new run or investigation: the rule in one place.

    An evidence folder (absolute, since the kernel runs elsewhere), else the URL given, else
    ``prometheus`` when one is configured (the kernel reads the URL and credentials itself, so
    no secret becomes a parameter). ``instead`` ends the error: what the caller can pass.
    """
    if url and evidence is not None:
        raise ConfigError("pass a Prometheus URL or an evidence folder, not both")
    if evidence is not None:
        return str(Path(evidence).absolute())
    if url and url.strip():
        refuse_credentials(url)  # a source is a parameter, and parameters are archived
        return url.strip()
    if settings.url:
        return CONFIGURED_PROMETHEUS
    raise ConfigError(
        "no metrics source: set WORKBOOKS_PROMETHEUS_URL (or prometheus.url in the config "
        f"file), or {instead}"
    )


def archived_source(evidence: Path, *, recorded: str, instead: str) -> str:
    """The ``source`` that reads an archived run again: its saved evidence folder, or the demo
    evidence when the run was a demo. ``instead`` says what to do when neither is there.
    """
    if evidence.is_dir():
        return str(evidence.absolute())
    if recorded == DEMO_SOURCE:
        return DEMO_SOURCE
    raise ArchiveError(f"the run saved no evidence ({evidence} is missing); {instead}")


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
