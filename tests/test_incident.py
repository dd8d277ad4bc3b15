"""The in-notebook facade: the demo incident offline, a real Prometheus, a dead one, queries
without data, and the evidence a run leaves behind replaying the same frames."""

from __future__ import annotations

import ast
import http.server
import json
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyarrow import parquet

from workbooks.core.config import Config, PrometheusSettings
from workbooks.core.durations import parse_duration
from workbooks.core.errors import ConfigError
from workbooks.notebook.catalog import Catalog
from workbooks.notebook.incident import Incident
from workbooks.notebook.sources import EvidenceSource, Window, demo_evidence_dir
from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import make_scenario

ROOT = Path(__file__).resolve().parents[1]
ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)
LIVE_SERVICE = "svc-incident-latency"
DEMO_WINDOW = Window(
    datetime(2026, 11, 20, 12, 10, tzinfo=UTC), datetime(2026, 11, 20, 14, 45, tzinfo=UTC)
)


def notebook_parameters(runbook: str) -> dict[str, Any]:
    """The values of the runbook's `parameters` cell, as papermill would see them."""
    notebook = json.loads((ROOT / "notebooks" / f"{runbook}.ipynb").read_text(encoding="utf-8"))
    (cell,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values = {}
    for statement in ast.parse("".join(cell["source"])).body:
        assert isinstance(statement, ast.Assign)
        (target,) = statement.targets
        assert isinstance(target, ast.Name)
        values[target.id] = ast.literal_eval(statement.value)
    return values


def config(**prometheus: Any) -> Config:
    """A config that reads no file and no environment: the test says everything."""
    return Config(prometheus=PrometheusSettings(**prometheus))


@pytest.fixture(autouse=True)
def _no_evidence_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def demo_incident(**overrides: Any) -> Incident:
    parameters = {**notebook_parameters("high-latency"), **overrides}
    return Incident(runbook="high-latency", config=Config(), **parameters)


# --- the demo incident, offline ------------------------------------------------------------------


def test_the_notebook_parameters_open_the_demo_incident() -> None:
    incident = demo_incident()

    assert incident.findings == []  # the source opened
    assert incident.window == DEMO_WINDOW  # the recorded window, whatever today is
    assert incident.step_seconds == 30
    assert incident.service == "inference-api"
    assert incident.starts_at == datetime(2026, 11, 20, 14, 10, tzinfo=UTC)
    assert incident.ends_at is None
    assert incident.source_description == "demo evidence (high-latency)"


def test_demo_latency_by_route_has_a_baseline_shifted_onto_the_window() -> None:
    incident = demo_incident()

    result = incident.query("latency_p99_by_route")

    assert not result.empty
    assert result.error is None
    assert result.title == "p99 latency by route"
    assert result.unit == "seconds"
    assert sorted(result.current["route"].unique()) == [
        "/v1/audio",
        "/v1/chat",
        "/v1/embed",
        "/v1/vision",
    ]
    assert result.baseline is not None and not result.baseline.empty
    assert result.baseline["timestamp"].min() == pd.Timestamp(DEMO_WINDOW.start)
    assert result.baseline["timestamp"].max() == pd.Timestamp(DEMO_WINDOW.end)
    # The same numbers as recorded a day earlier, moved by exactly the baseline offset.
    recorded = EvidenceSource(demo_evidence_dir("high-latency")).range_query(
        "latency_p99_by_route",
        result.query,
        DEMO_WINDOW.shifted(timedelta(days=1)),
        30,
        role="baseline",
    )
    assert recorded["timestamp"].max() == pd.Timestamp(DEMO_WINDOW.end - timedelta(days=1))
    expected = recorded.assign(timestamp=recorded["timestamp"] + pd.Timedelta(days=1))
    pd.testing.assert_frame_equal(result.baseline, expected)
    assert incident.findings == []


def test_the_demo_baseline_shows_the_planted_bad_version() -> None:
    """The high-latency demo is model 2.4.0 on api-1 and api-3: only they rise against baseline."""
    result = demo_incident().query("latency_p99_by_instance")

    since = pd.Timestamp("2026-11-20T14:20Z")
    after = result.current[result.current["timestamp"] >= since]
    before = result.baseline[result.baseline["timestamp"] >= since]
    rise = (
        after.groupby("instance")["value"].median() / before.groupby("instance")["value"].median()
    )
    assert sorted(rise[rise > 2].index) == ["api-1", "api-3"]
    assert sorted(rise[rise < 1.2].index) == ["api-0", "api-2"]


def test_a_parameterised_query_fills_its_title_and_replays() -> None:
    result = demo_incident().query("latency_quantile", quantile=0.99, percentile=99)

    assert result.title == "p99 latency"
    assert "histogram_quantile(0.99," in result.query
    assert not result.empty


def test_without_baseline_only_the_window_is_queried() -> None:
    result = demo_incident().query("model_versions", baseline=False)

    assert result.baseline is None
    assert not result.empty


def test_a_missing_placeholder_is_a_warning_not_a_crash() -> None:
    incident = demo_incident()

    result = incident.query("latency_quantile", percentile=99)

    assert result.empty
    (finding,) = incident.findings
    assert finding.severity == "warning"
    assert finding.title == "Query latency_quantile failed"
    assert "needs quantile" in finding.detail


def test_a_changed_query_on_replay_is_a_warning() -> None:
    incident = demo_incident()

    result = incident.query("latency_p99_by_route", promql="max(up)")

    assert result.empty
    (finding,) = incident.findings
    assert finding.title == "Query latency_p99_by_route failed"
    assert "recorded with a different query" in finding.detail


def test_an_unknown_source_is_one_critical_finding_and_no_crash() -> None:
    incident = demo_incident(source="prometheus-eu")

    assert [f.title for f in incident.findings] == ["The metrics source could not be opened"]
    assert incident.findings[0].severity == "critical"
    result = incident.query("latency_p99_by_route")
    assert result.empty
    assert "neither 'demo'" in (result.error or "")
    assert len(incident.findings) == 1


# --- the window -------------------------------------------------------------------------------


def test_a_live_window_runs_from_lookback_before_the_start_to_now() -> None:
    pinned = Config(
        prometheus=PrometheusSettings(url="http://127.0.0.1:1"),
        now=datetime(2026, 11, 20, 15, 0, tzinfo=UTC),
    )

    incident = Incident(
        runbook="high-latency",
        alert_name="HighLatency",
        starts_at="2026-11-20T14:10:00Z",
        lookback="3h",
        source="prometheus",
        config=pinned,
    )

    assert incident.window == Window(
        datetime(2026, 11, 20, 11, 10, tzinfo=UTC), datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    )
    assert incident.step_seconds == 30


def test_a_resolved_alert_ends_the_window_at_least_five_minutes_after_its_start() -> None:
    common = {
        "runbook": "high-latency",
        "alert_name": "HighLatency",
        "starts_at": "2026-11-20T16:10:00+02:00",
        "source": "http://127.0.0.1:1",
        "config": config(),
    }

    ended = Incident(ends_at="2026-11-20T14:40:00Z", lookback="1h", **common)
    brief = Incident(ends_at="2026-11-20T14:11:00Z", lookback="1h", **common)

    assert ended.window == Window(
        datetime(2026, 11, 20, 13, 10, tzinfo=UTC), datetime(2026, 11, 20, 14, 40, tzinfo=UTC)
    )
    assert brief.window.end == datetime(2026, 11, 20, 14, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        (timedelta(hours=3), timedelta(hours=3)),
    ],
)
def test_durations_read_like_prometheus(text: str | timedelta, duration: timedelta) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["soon", "1.5h", "-1h", "0m", "2 fortnights"])
def test_a_bad_duration_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=repr(text).replace("(", r"\(")):
        parse_duration(text)


@pytest.mark.parametrize("text", ["", "nan", "NaT"])
def test_an_empty_duration_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.skipif(
    int(pd.__version__.split(".")[0]) < 3, reason="pandas 2 reads 'd' without a warning"
)
def test_the_default_baseline_parses_without_a_deprecation_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_duration("1d") == timedelta(days=1)


@pytest.mark.parametrize("text", ["5", "1ns"])
def test_a_duration_without_a_unit_or_below_a_microsecond_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


# --- a dead Prometheus --------------------------------------------------------------------------


def test_a_dead_prometheus_gives_one_critical_finding_then_answers_at_once() -> None:
    incident = Incident(
        runbook="high-latency",
        alert_name="HighLatency",
        labels={"service": "inference-api"},
        starts_at="2026-11-20T14:10:00Z",
        source="http://127.0.0.1:1",
        config=config(),
    )
    assert incident.findings == []  # opening does not connect

    first = incident.query("latency_p99_by_route")
    started = time.monotonic()
    later = [incident.query(name) for name in ("request_rate", "error_ratio", "cpu_by_instance")]
    later_seconds = time.monotonic() - started

    assert first.empty
    assert "unreachable" in (first.error or "")
    (finding,) = incident.findings
    assert finding.severity == "critical"
    assert "unreachable" in finding.title
    assert "127.0.0.1:1" in finding.detail
    assert all(result.empty and result.error for result in later)
    assert later_seconds < 0.5


class _SlowPrometheus(http.server.ThreadingHTTPServer):
    """Answers nothing in time; counts the requests it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        release = threading.Event()
        self.release = release
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                release.wait(10)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def slow_prometheus() -> Iterator[_SlowPrometheus]:
    server = _SlowPrometheus()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_hanging_prometheus_is_waited_for_once(slow_prometheus: _SlowPrometheus) -> None:
    incident = Incident(
        runbook="high-latency",
        alert_name="HighLatency",
        labels={"service": "inference-api"},
        starts_at="2026-11-20T14:10:00Z",
        source=slow_prometheus.url,
        config=config(timeout_seconds=0.3),
    )

    incident.query("latency_p99_by_route")
    asked = slow_prometheus.requests
    started = time.monotonic()
    for name in ("request_rate", "error_ratio", "cpu_by_instance", "model_versions"):
        incident.query(name)

    assert asked >= 1
    assert slow_prometheus.requests == asked  # no further requests once it was found down
    assert time.monotonic() - started < 0.2
    assert [f.severity for f in incident.findings] == ["critical"]


# --- a real Prometheus --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    scenario = make_scenario("high-latency", "slow_route", onset=ONSET, service=LIVE_SERVICE)
    server = start_prometheus([scenario], tmp_path_factory.mktemp("incident-prometheus"))
    yield server
    server.stop()


def live_incident(prometheus: PrometheusServer, service: str = LIVE_SERVICE) -> Incident:
    return Incident(
        runbook="high-latency",
        alert_name="HighLatency",
        severity="critical",
        labels={"alertname": "HighLatency", "service": service, "severity": "critical"},
        starts_at=ONSET + timedelta(minutes=5),
        lookback="2h",
        baseline="1d",
        source=prometheus.url,
        config=Config(
            prometheus=PrometheusSettings(timeout_seconds=5),
            now=ONSET + timedelta(minutes=35),
        ),
    )


@pytest.mark.prometheus
def test_a_live_query_returns_the_window_and_its_baseline(prometheus: PrometheusServer) -> None:
    incident = live_incident(prometheus)

    result = incident.query("request_rate_by_route")

    assert incident.findings == []
    assert sorted(result.current["route"].unique()) == [
        "/v1/audio",
        "/v1/chat",
        "/v1/embed",
        "/v1/vision",
    ]
    assert result.current["timestamp"].min() == pd.Timestamp(incident.window.start)
    assert result.current["timestamp"].max() == pd.Timestamp(incident.window.end)
    assert result.baseline is not None
    assert result.baseline["timestamp"].min() == pd.Timestamp(incident.window.start)
    # The baseline is real data from a day earlier, not a copy of the window.
    direct = prometheus.query_range(
        result.query,
        incident.window.start - timedelta(days=1),
        incident.window.end - timedelta(days=1),
        incident.step_seconds,
    )
    assert len(result.baseline) == sum(len(series["values"]) for series in direct)


@pytest.mark.prometheus
def test_a_metric_without_data_is_a_no_data_warning(prometheus: PrometheusServer) -> None:
    incident = live_incident(prometheus)

    result = incident.query("request_rate", promql="nonexistent_metric")

    assert result.empty
    assert result.error is None
    (finding,) = incident.findings
    assert finding.severity == "warning"
    assert finding.detail == "no data for request_rate: nonexistent_metric"
    assert finding.subject == {"query": "request_rate"}


@pytest.mark.prometheus
def test_a_service_without_data_names_the_rendered_query(prometheus: PrometheusServer) -> None:
    incident = live_incident(prometheus, service="no-such-service")

    incident.query("request_rate")

    (finding,) = incident.findings
    expected = Catalog.load()["request_rate"].render({"service": "no-such-service"})
    assert finding.detail == f"no data for request_rate: {expected}"


@pytest.mark.prometheus
def test_bad_promql_is_a_warning_and_the_source_stays_usable(prometheus: PrometheusServer) -> None:
    incident = live_incident(prometheus)

    broken = incident.query("request_rate", promql="sum(rate(http_requests_total[5m]")
    working = incident.query("request_rate")

    assert broken.empty
    assert [f.title for f in incident.findings] == ["Query request_rate failed"]
    assert incident.findings[0].severity == "warning"
    assert not working.empty


@pytest.mark.prometheus
def test_evidence_is_written_and_replays_the_same_frames(
    prometheus: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evidence = tmp_path / "evidence"
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", str(evidence))
    live = live_incident(prometheus)
    by_route = live.query("latency_p99_by_route")
    p99 = live.query("latency_quantile", quantile=0.99, percentile=99)
    versions = live.query("model_versions", baseline=False)

    manifest = json.loads((evidence / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"] == prometheus.url
    assert {(e["name"], e["role"]) for e in manifest["entries"]} == {
        ("latency_p99_by_route", "current"),
        ("latency_p99_by_route", "baseline"),
        ("latency_quantile[percentile=99,quantile=0.99]", "current"),
        ("latency_quantile[percentile=99,quantile=0.99]", "baseline"),
        ("model_versions", "current"),
    }

    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")
    prometheus_free = Config(prometheus=PrometheusSettings(url="http://127.0.0.1:1"))
    replay = Incident(
        runbook="high-latency",
        alert_name="HighLatency",
        labels=live.labels,
        starts_at="2030-01-01T00:00:00Z",  # ignored: a replay keeps the recorded window
        source=str(evidence),
        config=prometheus_free,
    )

    assert replay.window == live.window
    again = [
        replay.query("latency_p99_by_route"),
        replay.query("latency_quantile", quantile=0.99, percentile=99),
        replay.query("model_versions", baseline=False),
    ]
    for original, replayed in zip([by_route, p99, versions], again, strict=True):
        pd.testing.assert_frame_equal(replayed.current, original.current)
        if original.baseline is None:
            assert replayed.baseline is None
        else:
            pd.testing.assert_frame_equal(replayed.baseline, original.baseline)
    assert replay.findings == []


def test_the_demo_replay_writes_evidence_that_replays_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", str(tmp_path / "copy"))
    first = demo_incident().query("error_ratio")

    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")
    again = demo_incident(source=str(tmp_path / "copy")).query("error_ratio")

    pd.testing.assert_frame_equal(again.current, first.current)
    pd.testing.assert_frame_equal(again.baseline, first.baseline)


def test_a_replay_keeps_the_files_it_replayed_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replayed result is saved as the file it was read from, whatever wrote that (here
    gzip-compressed Parquet, which this package never writes), not written again."""
    recorded = tmp_path / "recorded"
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", str(recorded))
    demo_incident().query("error_ratio")
    entries = json.loads((recorded / "manifest.json").read_text(encoding="utf-8"))["entries"]
    for entry in entries:  # as another writer, or another pyarrow, might have written them
        path = recorded / entry["file"]
        parquet.write_table(parquet.read_table(path), path, compression="gzip")

    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", str(tmp_path / "copy"))
    again = demo_incident(source=str(recorded)).query("error_ratio")

    copied = json.loads((tmp_path / "copy" / "manifest.json").read_text(encoding="utf-8"))
    assert copied["entries"] == entries
    for entry in entries:
        copy = tmp_path / "copy" / entry["file"]
        assert copy.read_bytes() == (recorded / entry["file"]).read_bytes(), entry["file"]
    assert not again.empty


def test_evidence_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    demo_incident().query("error_ratio")

    assert list(tmp_path.iterdir()) == []


# --- what the notebook shows --------------------------------------------------------------------


def test_escalation_says_escalate_now_after_a_critical_finding(
    capsys: pytest.CaptureFixture[str],
) -> None:
    incident = demo_incident(source="prometheus-eu")  # a critical finding: no source
    capsys.readouterr()

    incident.escalation()

    shown = capsys.readouterr().out
    assert "Escalate now" in shown
    assert "after 30 minutes" in shown
    for contact in ("ML Engineering Team", "DevOps Team", "#mobile-ml-alerts", "mobile-ml-oncall"):
        assert contact in shown


def test_escalation_without_a_critical_finding_does_not_escalate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    incident = demo_incident()

    incident.escalation()

    shown = capsys.readouterr().out
    assert "Escalate now" not in shown
    assert "No critical finding" in shown


def test_summary_shows_the_worst_findings_first(capsys: pytest.CaptureFixture[str]) -> None:
    incident = demo_incident()
    incident.query("latency_quantile", percentile=99)  # a warning: quantile missing
    incident.query("latency_p99_by_route", promql="max(up)")  # a warning: changed on replay
    capsys.readouterr()

    incident.summary(limit=1)

    shown = capsys.readouterr().out
    assert "## Summary" in shown
    assert "Query latency_quantile failed" in shown
    assert "and 1 more below" in shown
