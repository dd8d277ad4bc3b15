"""A live Prometheus as a workbook's source, and its answers as long frames.

Imported when a run's source is a Prometheus (:func:`workbooks.notebook.sources.open_source`),
not by a run that replays evidence: requests and prometheus-api-client cost a cold kernel
60-80 ms to import. Errors from requests and prometheus-api-client are wrapped here, and only
here.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import ConfigError, QueryFailedError, SourceUnavailableError
from workbooks.core.redact import redact_url

from .sources import Window, empty_frame


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
