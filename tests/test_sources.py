"""Sources: a real Prometheus, real local HTTP servers that misbehave or demand credentials, and
saved evidence that replays what a run saw."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import (
    ArchiveError,
    ConfigError,
    EvidenceMissingError,
    QueryFailedError,
    SourceUnavailableError,
)
from workbooks.core.redact import redact_url
from workbooks.notebook.catalog import Catalog
from workbooks.notebook.prometheus import PrometheusSource, frame_from_matrix
from workbooks.notebook.source_spec import archived_source, choose_source
from workbooks.notebook.sources import (
    EvidenceSource,
    EvidenceWriter,
    Window,
    choose_step,
    demo_evidence_dir,
    empty_frame,
    open_source,
    series_count,
    utc,
)
from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import make_scenario

ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)
SERVICE = "inference-api"
# The scenario's current stretch: the alert fires at 14:10; data runs 11:45 to 14:45.
WINDOW = Window(
    datetime(2026, 11, 20, 12, 10, tzinfo=UTC), datetime(2026, 11, 20, 14, 40, tzinfo=UTC)
)
EMPTY_MATRIX = {"status": "success", "data": {"resultType": "matrix", "result": []}}
DEMO_WINDOW = Window(
    datetime(2026, 11, 20, 12, 10, tzinfo=UTC), datetime(2026, 11, 20, 14, 45, tzinfo=UTC)
)

ROOT = Path(__file__).resolve().parents[1]


# --- choose_step ------------------------------------------------------------------------------

WINDOWS = [
    timedelta(minutes=5),
    timedelta(minutes=47),
    timedelta(hours=2),
    timedelta(hours=8, minutes=20),
    timedelta(hours=8, minutes=20, seconds=1),
    timedelta(days=1),
    timedelta(days=3, hours=7),
    timedelta(days=7),
    timedelta(days=30),
]


@pytest.mark.parametrize("duration", WINDOWS, ids=str)
@pytest.mark.parametrize(
    ("max_points", "min_step_seconds"), [(1000, 30), (11000, 1), (10, 1), (500, 45), (250, 15)]
)
def test_choose_step_keeps_points_under_the_cap_and_never_below_min_step(
    duration: timedelta, max_points: int, min_step_seconds: int
) -> None:
    window = Window(WINDOW.start, WINDOW.start + duration)

    step = choose_step(window, max_points=max_points, min_step_seconds=min_step_seconds)

    assert step >= min_step_seconds
    # Prometheus counts (end - start) / step against its 11,000 cap; so do we.
    assert duration.total_seconds() / step <= max_points


@pytest.mark.parametrize(
    ("duration", "step"),
    [
        (timedelta(minutes=5), 30),  # min_step wins on short windows
        (timedelta(hours=2), 30),
        (timedelta(hours=8, minutes=20), 30),  # exactly 1,000 steps of 30 s
        (timedelta(hours=8, minutes=20, seconds=1), 60),
        (timedelta(days=1), 120),
        (timedelta(days=7), 900),
        (timedelta(days=30), 3600),
    ],
    ids=str,
)
def test_choose_step_picks_the_smallest_round_step(duration: timedelta, step: int) -> None:
    assert choose_step(Window(WINDOW.start, WINDOW.start + duration)) == step


def test_choose_step_beyond_a_day_per_point_still_respects_the_cap() -> None:
    window = Window(WINDOW.start, WINDOW.start + timedelta(days=3 * 365))

    step = choose_step(window, max_points=10, min_step_seconds=1)

    assert window.duration.total_seconds() / step <= 10
    assert step > 86400


# --- frames -----------------------------------------------------------------------------------


def test_an_empty_result_is_an_empty_utc_frame() -> None:
    frame = frame_from_matrix([])

    assert frame.empty
    assert list(frame.columns) == ["timestamp", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["value"].dtype == float
    assert series_count(frame) == 0
    pd.testing.assert_frame_equal(frame, empty_frame())


def test_a_multi_series_result_becomes_one_long_frame() -> None:
    result = [
        {
            "metric": {"__name__": "x", "route": "/v1/chat", "code": "500"},
            "values": [[1795702200, "0.25"], [1795702230.5, "NaN"]],
        },
        {"metric": {"__name__": "x", "route": "/v1/vision"}, "values": [[1795702200, "+Inf"]]},
        {"metric": {}, "values": [[1795702200, "-1e3"]]},
    ]

    frame = frame_from_matrix(result)

    assert list(frame.columns) == ["timestamp", "route", "code", "value"]  # no __name__
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert list(frame["timestamp"]) == [
        pd.Timestamp("2026-11-26T14:10:00Z"),
        pd.Timestamp("2026-11-26T14:10:30.5Z"),
        pd.Timestamp("2026-11-26T14:10:00Z"),
        pd.Timestamp("2026-11-26T14:10:00Z"),
    ]
    assert list(frame["route"]) == ["/v1/chat", "/v1/chat", "/v1/vision", ""]
    assert list(frame["code"]) == ["500", "500", "", ""]  # absent label: empty, not NaN
    values = list(frame["value"])
    assert values[0] == 0.25
    assert pd.isna(values[1])
    assert values[2:] == [float("inf"), -1000.0]
    assert series_count(frame) == 3


def test_a_result_without_labels_is_one_series() -> None:
    frame = frame_from_matrix([{"metric": {}, "values": [[1795702200, "1"], [1795702260, "2"]]}])

    assert list(frame.columns) == ["timestamp", "value"]
    assert series_count(frame) == 1


def test_utc_reads_text_and_naive_times_as_utc() -> None:
    assert utc("2026-11-20T14:10:00Z") == datetime(2026, 11, 20, 14, 10, tzinfo=UTC)
    assert utc("2026-11-20T16:10:00+02:00") == datetime(2026, 11, 20, 14, 10, tzinfo=UTC)
    assert utc(datetime(2026, 11, 20, 14, 10)).tzinfo is UTC


# --- a real Prometheus ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    scenario = make_scenario("high-latency", "slow_route", onset=ONSET, service=SERVICE)
    server = start_prometheus([scenario], tmp_path_factory.mktemp("sources-prometheus"))
    yield server
    server.stop()


@pytest.mark.prometheus
def test_prometheus_source_returns_what_prometheus_holds(prometheus: PrometheusServer) -> None:
    query = Catalog.load()["request_rate_by_route"].render({"service": SERVICE})
    source = PrometheusSource(PrometheusSettings(), url=prometheus.url)

    frame = source.range_query("request_rate_by_route", query, WINDOW, 60)

    assert source.description == prometheus.url
    assert sorted(frame["route"].unique()) == ["/v1/audio", "/v1/chat", "/v1/embed", "/v1/vision"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    for _, series in frame.groupby("route"):
        stamps = list(series["timestamp"])
        assert stamps[0] == pd.Timestamp(WINDOW.start)
        assert stamps[-1] == pd.Timestamp(WINDOW.end)
        assert len(stamps) == 151  # 2.5 h at 60 s, both ends included
    assert (frame["value"] > 0).all()
    # The same numbers as Prometheus's own HTTP API gives.
    direct = prometheus.query_range(query, WINDOW.start, WINDOW.end, 60)
    expected = {
        (series["metric"]["route"], float(ts)): float(value)
        for series in direct
        for ts, value in series["values"]
    }
    got = {
        (row.route, row.timestamp.timestamp()): row.value for row in frame.itertuples(index=False)
    }
    assert got == pytest.approx(expected)


@pytest.mark.prometheus
def test_a_trailing_slash_on_the_url_is_fine(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(PrometheusSettings(url=prometheus.url + "/"))

    frame = source.range_query(
        "up", f'sum(http_requests_total{{service="{SERVICE}"}})', WINDOW, 300
    )

    assert len(frame) == 31
    assert source.description == prometheus.url


@pytest.mark.prometheus
def test_a_metric_that_does_not_exist_is_an_empty_frame(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(PrometheusSettings(url=prometheus.url))

    frame = source.range_query("missing", "nonexistent_metric", WINDOW, 60)

    assert frame.empty
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.prometheus
def test_bad_promql_is_a_failed_query_naming_it(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(PrometheusSettings(url=prometheus.url))

    with pytest.raises(QueryFailedError) as caught:
        source.range_query("broken", "sum(rate(http_requests_total[5m]", WINDOW, 60)

    message = str(caught.value)
    assert "'broken'" in message
    assert "sum(rate(http_requests_total[5m]" in message
    assert "HTTP Status Code 400" in message


@pytest.mark.prometheus
def test_too_many_points_is_a_failed_query(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(PrometheusSettings(url=prometheus.url))
    month = Window(WINDOW.end - timedelta(days=30), WINDOW.end)

    with pytest.raises(QueryFailedError, match="resolution"):
        source.range_query("too-fine", "vector(1)", month, 1)


@pytest.mark.prometheus
def test_the_largest_step_count_config_allows_is_accepted(prometheus: PrometheusServer) -> None:
    window = Window(WINDOW.end - timedelta(seconds=11000 * 30), WINDOW.end)
    step = choose_step(window, max_points=11000, min_step_seconds=30)
    source = PrometheusSource(PrometheusSettings(url=prometheus.url, max_points=11000))

    frame = source.range_query("edge", "vector(1)", window, step)

    assert step == 30
    assert len(frame) == 11001


# --- real local HTTP servers ------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]  # lower-cased names
    params: dict[str, list[str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.seen.append(
            Seen(
                parts.path,
                {name.lower(): value for name, value in self.headers.items()},
                parse_qs(parts.query),
            )
        )
        mode = parts.path.split("/")[1]
        if mode == "slow":
            self.server.release.wait(10)
        status, body, content_type = {
            "401": (401, b"Unauthorized", "text/plain"),
            "403": (403, b"Forbidden", "text/plain"),
            "503": (503, b"Service Unavailable", "text/plain"),
            "html": (200, b"<html><body>Please log in</body></html>", "text/html"),
            "nodata": (200, b"{}", "application/json"),
        }.get(mode, (200, json.dumps(EMPTY_MATRIX).encode(), "application/json"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (the slow case)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[Seen] = []
        self.release = threading.Event()
        scheme = "http"
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def requests_to(self, mode: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.split("/")[1] == mode]


def _serve(server: _Recorder) -> Iterator[_Recorder]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def http_server() -> Iterator[_Recorder]:
    yield from _serve(_Recorder())


def test_dead_port_is_unavailable_quickly() -> None:
    source = PrometheusSource(PrometheusSettings(url="http://127.0.0.1:1"))
    started = time.monotonic()

    with pytest.raises(SourceUnavailableError, match="unreachable") as caught:
        source.range_query("q", "up", WINDOW, 60)

    assert time.monotonic() - started < 3
    assert "WORKBOOKS_PROMETHEUS_URL" in str(caught.value)


def test_a_slow_server_is_given_up_on_after_the_timeout(http_server: _Recorder) -> None:
    source = PrometheusSource(
        PrometheusSettings(timeout_seconds=0.5), url=http_server.url + "/slow"
    )
    started = time.monotonic()

    with pytest.raises(SourceUnavailableError):
        source.range_query("p99", "up", WINDOW, 60)

    assert time.monotonic() - started < 3
    assert http_server.requests_to("slow")


def test_a_slow_server_error_says_it_timed_out(http_server: _Recorder) -> None:
    source = PrometheusSource(
        PrometheusSettings(timeout_seconds=0.5), url=http_server.url + "/slow"
    )

    with pytest.raises(SourceUnavailableError) as caught:
        source.range_query("p99", "up", WINDOW, 60)

    assert "did not answer 'p99' within 0.5 s" in str(caught.value)
    assert "WORKBOOKS_PROMETHEUS_TIMEOUT" in str(caught.value)


def test_the_request_carries_the_query_window_and_step(http_server: _Recorder) -> None:
    source = PrometheusSource(PrometheusSettings(url=http_server.url + "/ok/plain"))

    frame = source.range_query("q", 'sum(up{job="a b"})', WINDOW, 120)

    assert frame.empty
    seen = http_server.requests_to("ok")[-1]
    assert seen.path == "/ok/plain/api/v1/query_range"
    assert seen.params == {
        "query": ['sum(up{job="a b"})'],
        "start": [str(int(WINDOW.start.timestamp()))],
        "end": [str(int(WINDOW.end.timestamp()))],
        "step": ["120s"],
    }
    assert "authorization" not in seen.headers  # nothing configured, nothing sent


def _last_request(http_server: _Recorder, settings: PrometheusSettings, tag: str) -> Seen:
    source = PrometheusSource(settings, url=f"{http_server.url}/ok/{tag}")
    source.range_query("q", "up", WINDOW, 60)
    (seen,) = [s for s in http_server.requests_to("ok") if s.path.split("/")[2] == tag]
    return seen


def test_a_bearer_token_is_sent(http_server: _Recorder) -> None:
    seen = _last_request(http_server, PrometheusSettings(bearer_token="tok-123"), "bearer")

    assert seen.headers["authorization"] == "Bearer tok-123"


def test_basic_auth_is_sent(http_server: _Recorder) -> None:
    settings = PrometheusSettings(username="alice", password="s3cr:et")

    seen = _last_request(http_server, settings, "basic")

    expected = base64.b64encode(b"alice:s3cr:et").decode()
    assert seen.headers["authorization"] == f"Basic {expected}"


def test_extra_headers_are_sent_as_configured(http_server: _Recorder) -> None:
    settings = PrometheusSettings(
        headers={"X-Scope-OrgID": "team-a", "X-Api-Key": "k-42"}, bearer_token="tok-9"
    )

    seen = _last_request(http_server, settings, "headers")

    assert seen.headers["x-scope-orgid"] == "team-a"
    assert seen.headers["x-api-key"] == "k-42"
    assert seen.headers["authorization"] == "Bearer tok-9"


def test_headers_of_one_source_do_not_leak_into_another(http_server: _Recorder) -> None:
    _last_request(http_server, PrometheusSettings(headers={"X-Scope-OrgID": "a"}), "first")

    seen = _last_request(http_server, PrometheusSettings(), "second")

    assert "x-scope-orgid" not in seen.headers
    assert "authorization" not in seen.headers


@pytest.mark.parametrize("status", ["401", "403"])
def test_refused_credentials_say_so(http_server: _Recorder, status: str) -> None:
    source = PrometheusSource(
        PrometheusSettings(bearer_token="wrong-token"), url=f"{http_server.url}/{status}"
    )

    with pytest.raises(SourceUnavailableError, match="refused our credentials") as caught:
        source.range_query("q", "up", WINDOW, 60)

    assert "WORKBOOKS_PROMETHEUS_TOKEN" in str(caught.value)
    assert "wrong-token" not in str(caught.value)


def test_a_failing_server_is_unavailable_without_a_long_retry(http_server: _Recorder) -> None:
    source = PrometheusSource(PrometheusSettings(), url=http_server.url + "/503")
    started = time.monotonic()

    with pytest.raises(SourceUnavailableError, match="5xx"):
        source.range_query("q", "up", WINDOW, 60)

    assert time.monotonic() - started < 3
    assert 1 <= len(http_server.requests_to("503")) <= 2


def test_a_login_page_is_unavailable_not_a_crash(http_server: _Recorder) -> None:
    source = PrometheusSource(PrometheusSettings(), url=http_server.url + "/html")

    with pytest.raises(SourceUnavailableError):
        source.range_query("q", "up", WINDOW, 60)


def test_a_login_page_is_reported_as_not_prometheus(http_server: _Recorder) -> None:
    source = PrometheusSource(PrometheusSettings(), url=http_server.url + "/html")

    with pytest.raises(SourceUnavailableError, match="did not answer like Prometheus"):
        source.range_query("q", "up", WINDOW, 60)


def test_json_that_is_not_a_prometheus_answer_is_unavailable(http_server: _Recorder) -> None:
    source = PrometheusSource(PrometheusSettings(), url=http_server.url + "/nodata")

    with pytest.raises(SourceUnavailableError):
        source.range_query("q", "up", WINDOW, 60)


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Recorder, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for server in _serve(_Recorder(context)):
        yield server, cert


def test_an_unknown_certificate_says_to_set_the_ca_bundle(
    tls_server: tuple[_Recorder, Path],
) -> None:
    server, _ = tls_server
    source = PrometheusSource(PrometheusSettings(url=server.url + "/ok"))

    with pytest.raises(SourceUnavailableError, match="WORKBOOKS_PROMETHEUS_CA_BUNDLE"):
        source.range_query("q", "up", WINDOW, 60)


def test_the_configured_ca_bundle_is_trusted(tls_server: tuple[_Recorder, Path]) -> None:
    server, cert = tls_server
    source = PrometheusSource(PrometheusSettings(url=server.url + "/ok", ca_bundle=str(cert)))

    assert source.range_query("q", "up", WINDOW, 60).empty


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verification_can_be_turned_off(tls_server: tuple[_Recorder, Path]) -> None:
    server, _ = tls_server
    source = PrometheusSource(PrometheusSettings(url=server.url + "/ok", verify_tls=False))

    assert source.range_query("q", "up", WINDOW, 60).empty


# --- the URL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://alice:s3cret@prom:9090", "https://alice@prom:9090/", "http://:s3cret@prom"]
)
def test_a_url_with_credentials_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="WORKBOOKS_PROMETHEUS_USERNAME") as caught:
        PrometheusSource(PrometheusSettings(url=url))

    assert "s3cret" not in str(caught.value)


def test_no_url_says_where_to_set_one() -> None:
    with pytest.raises(ConfigError, match="WORKBOOKS_PROMETHEUS_URL"):
        PrometheusSource(PrometheusSettings())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://prom:9090", "http://prom:9090"),
        ("https://alice:pw@prom.example/prefix?token=abc#x", "https://prom.example/prefix"),
        ("http://127.0.0.1:9090/", "http://127.0.0.1:9090/"),
    ],
)
def test_redact_url_drops_credentials_and_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_keeps_an_ipv6_host_readable() -> None:
    assert redact_url("http://[::1]:9090/") == "http://[::1]:9090/"


# --- evidence ----------------------------------------------------------------------------------


def _frame(route: str, start: float = 1795702200.0) -> pd.DataFrame:
    return frame_from_matrix(
        [
            {
                "metric": {"route": route, "instance": "api-1"},
                "values": [[start + 30 * i, str(0.1 * i)] for i in range(5)],
            },
            {"metric": {"route": route}, "values": [[start, "NaN"]]},
        ]
    )


def test_evidence_replays_the_same_frames_and_window(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path / "evidence", window=WINDOW, source="http://prom:9090")
    baseline_window = WINDOW.shifted(timedelta(days=1))
    saved = {
        ("p99", "current"): _frame("/v1/chat"),
        ("p99", "baseline"): _frame("/v1/vision", start=1795615800.0),
        ("rate", "current"): empty_frame(),
    }
    for (name, role), frame in saved.items():
        window = baseline_window if role == "baseline" else WINDOW
        writer.save(
            name=name, role=role, query=f"q_{name}", window=window, step_seconds=30, frame=frame
        )

    replay = EvidenceSource(tmp_path / "evidence")

    assert replay.window == WINDOW
    assert replay.window.start.utcoffset() == timedelta(0)
    assert replay.recorded_from == "http://prom:9090"
    for (name, role), frame in saved.items():
        again = replay.range_query(name, f"q_{name}", WINDOW, 30, role=role)
        pd.testing.assert_frame_equal(again, frame)
    manifest = json.loads((tmp_path / "evidence" / "manifest.json").read_text(encoding="utf-8"))
    entry = next(e for e in manifest["entries"] if (e["name"], e["role"]) == ("p99", "baseline"))
    assert entry["start"] == baseline_window.start.isoformat()
    assert (entry["series"], entry["points"], entry["step_seconds"]) == (2, 6, 30)


def test_saving_again_replaces_the_earlier_result(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path, window=WINDOW, source="s")
    writer.save(
        name="q", role="current", query="up", window=WINDOW, step_seconds=30, frame=_frame("a")
    )
    writer.save(
        name="q", role="current", query="up", window=WINDOW, step_seconds=30, frame=_frame("b")
    )

    frame = EvidenceSource(tmp_path).range_query("q", "up", WINDOW, 30)

    assert set(frame["route"]) == {"b"}
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["entries"]) == 1


def test_results_saved_together_reach_the_manifest_at_the_end_even_if_the_block_fails(
    tmp_path: Path,
) -> None:
    writer = EvidenceWriter(tmp_path, window=WINDOW, source="s")

    def entries() -> list[tuple[str, str]]:
        manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
        return [(e["name"], e["role"]) for e in manifest["entries"]]

    with pytest.raises(RuntimeError), writer.together():
        series = writer.save(
            name="q", role="current", query="up", window=WINDOW, step_seconds=30, frame=_frame("a")
        )
        assert entries() == []  # one write, when the block ends
        raise RuntimeError("the baseline failed")

    assert series == 2  # its two label sets, as the manifest counts them
    assert entries() == [("q", "current")]
    assert set(EvidenceSource(tmp_path).range_query("q", "up", WINDOW, 30)["route"]) == {"a"}


def test_a_changed_query_text_is_missing_evidence(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path, window=WINDOW, source="s")
    writer.save(
        name="rate",
        role="current",
        query="sum(rate(x[5m]))",
        window=WINDOW,
        step_seconds=30,
        frame=_frame("a"),
    )

    with pytest.raises(EvidenceMissingError, match=r"different query \(sum\(rate\(x\[5m\]\)\)\)"):
        EvidenceSource(tmp_path).range_query("rate", "sum(rate(x[1m]))", WINDOW, 30)


def test_an_unknown_name_lists_what_the_evidence_holds(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path, window=WINDOW, source="s")
    for name in ("rate", "p99"):
        writer.save(
            name=name, role="current", query=name, window=WINDOW, step_seconds=30, frame=_frame("a")
        )
    replay = EvidenceSource(tmp_path)

    with pytest.raises(
        EvidenceMissingError, match=r"no current result for 'errors' \(it holds: p99, rate\)"
    ):
        replay.range_query("errors", "errors", WINDOW, 30)
    with pytest.raises(EvidenceMissingError, match=r"no baseline result for 'rate'"):
        replay.range_query("rate", "rate", WINDOW, 30, role="baseline")


def test_a_folder_without_a_manifest_is_not_evidence(tmp_path: Path) -> None:
    with pytest.raises(EvidenceMissingError, match=r"manifest\.json is missing"):
        EvidenceSource(tmp_path)


def test_names_that_look_alike_keep_their_own_evidence(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path, window=WINDOW, source="s")
    first, second = "p99[route=/v1/chat]", "p99[route=v1/chat]"
    writer.save(
        name=first,
        role="current",
        query="q",
        window=WINDOW,
        step_seconds=30,
        frame=_frame("/v1/chat"),
    )
    writer.save(
        name=second,
        role="current",
        query="q",
        window=WINDOW,
        step_seconds=30,
        frame=_frame("v1/chat"),
    )

    replay = EvidenceSource(tmp_path)

    assert set(replay.range_query(first, "q", WINDOW, 30)["route"]) == {"/v1/chat"}
    assert set(replay.range_query(second, "q", WINDOW, 30)["route"]) == {"v1/chat"}


# --- open_source ---------------------------------------------------------------------------------


def test_demo_opens_offline_and_replays_the_bundled_incident() -> None:
    source = open_source("demo", runbook="high-latency", settings=PrometheusSettings())
    query = Catalog.load()["latency_p99_by_route"].render({"service": SERVICE})

    frame = source.range_query("latency_p99_by_route", query, DEMO_WINDOW, 30)

    assert isinstance(source, EvidenceSource)
    assert source.description == "demo evidence (high-latency)"
    assert source.window == DEMO_WINDOW
    assert sorted(frame["route"].unique()) == ["/v1/audio", "/v1/chat", "/v1/embed", "/v1/vision"]
    assert frame["timestamp"].min() == pd.Timestamp(DEMO_WINDOW.start)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


@pytest.mark.parametrize("runbook", ["high-latency", "high-memory", "accuracy-drop"])
def test_every_shipped_runbook_has_demo_evidence(runbook: str) -> None:
    source = open_source("demo", runbook=runbook, settings=PrometheusSettings())

    assert source.window is not None
    assert (demo_evidence_dir(runbook) / "manifest.json").is_file()


def test_demo_for_a_runbook_without_evidence_is_missing_evidence() -> None:
    with pytest.raises(EvidenceMissingError, match="holds no evidence"):
        open_source("demo", runbook="no-such-runbook", settings=PrometheusSettings())


def test_a_url_or_prometheus_opens_a_live_source_without_connecting() -> None:
    settings = PrometheusSettings(url="http://127.0.0.1:1")

    by_url = open_source(" http://user-free.example:9090 ", runbook="x", settings=settings)
    configured = open_source("prometheus", runbook="x", settings=settings)

    assert isinstance(by_url, PrometheusSource)
    assert by_url.description == "http://user-free.example:9090"
    assert isinstance(configured, PrometheusSource)
    assert configured.description == "http://127.0.0.1:1"


def test_a_folder_opens_as_evidence(tmp_path: Path) -> None:
    EvidenceWriter(tmp_path, window=WINDOW, source="s")

    source = open_source(str(tmp_path), runbook="x", settings=PrometheusSettings())

    assert isinstance(source, EvidenceSource)
    assert source.window == WINDOW


def test_anything_else_is_a_config_error_listing_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither 'demo', 'prometheus', an http"):
        open_source(str(tmp_path / "no-such-folder"), runbook="x", settings=PrometheusSettings())


# --- choosing the source: one rule for run, open and serve --------------------------------------


def test_choose_source_prefers_evidence_then_a_url_then_the_configured_prometheus(
    tmp_path: Path,
) -> None:
    configured = PrometheusSettings(url="http://prom:9090")
    nothing = PrometheusSettings()

    assert choose_source(evidence=tmp_path, settings=nothing) == str(tmp_path.absolute())
    assert choose_source(url=" http://other:9090 ", settings=configured) == "http://other:9090"
    assert choose_source(settings=configured) == "prometheus"
    with pytest.raises(ConfigError, match=r"WORKBOOKS_PROMETHEUS_URL.*or pass --prometheus"):
        choose_source(settings=nothing)
    with pytest.raises(ConfigError, match="--from ID"):
        choose_source(settings=nothing, instead="pass --from ID")
    with pytest.raises(ConfigError, match="not both"):
        choose_source(url="http://x:9", evidence=tmp_path, settings=nothing)


def test_archived_source_is_the_saved_evidence_or_the_demo(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"

    assert archived_source(evidence, recorded="demo", instead="-") == "demo"
    with pytest.raises(ArchiveError, match=r"saved no evidence .*; run it again"):
        archived_source(evidence, recorded="http://prom:9090", instead="run it again")
    evidence.mkdir()
    assert archived_source(evidence, recorded="demo", instead="-") == str(evidence.absolute())


def test_the_demo_folder_is_found_in_one_place() -> None:
    from workbooks.core.paths import bundled_demos, demo_dir

    # Every runbook ships its demo.
    shipped = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert bundled_demos() == shipped
    assert demo_evidence_dir("high-memory") == demo_dir("high-memory") / "evidence"
    assert (demo_dir("high-latency") / "alert.json").is_file()
    assert demo_dir().name == "demo" and demo_dir("x").parent == demo_dir()
