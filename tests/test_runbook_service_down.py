"""service-down: its pure steps on small frames, and the workbook on real exporters.

The live tests start a real Prometheus scraping real processes (a prometheus_client service
instance, the Debian blackbox_exporter probing a small HTTP server of the test), break one thing,
and run the workbook through the runner against that Prometheus with the real clock: it must
name the failing probe URL, or the instance that stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import load_config
from workbooks.runbooks.service_down import Crashes, crashes_of, down_changes
from workbooks.runbooks.service_down_causes import probe_reason
from workbooks.runbooks.service_down_state import (
    THRESHOLDS,
    Outage,
    target_of,
    together,
)
from workbooks.running.runner import run_alert
from workbooks.synthetic.exporters import (
    BLACKBOX_EXPORTER,
    SwitchableHttpServer,
    missing_binaries,
    start_blackbox_exporter,
)
from workbooks.synthetic.hostload import start_service_instance
from workbooks.synthetic.lab import prometheus_available
from workbooks.synthetic.live import ScrapeTarget, probe_target, start_live_prometheus

LIMITS = THRESHOLDS.resolve(load_config(env={}))
T0 = pd.Timestamp("2026-11-20 13:00", tz="UTC")


def _series(values: list[float], *, step_seconds: int = 60) -> pd.Series:
    index = pd.DatetimeIndex(
        [T0 + pd.Timedelta(seconds=step_seconds * i) for i in range(len(values))]
    )
    return pd.Series(values, index=index, dtype=float)


def _frame(rows: dict[str, list[float]], label: str, **extra: str) -> pd.DataFrame:
    records = []
    for name, values in rows.items():
        for i, value in enumerate(values):
            records.append(
                {"timestamp": T0 + pd.Timedelta(minutes=i), label: name, **extra, "value": value}
            )
    return pd.DataFrame(records)


# --- pure steps -------------------------------------------------------------------------------


def test_a_target_down_for_good_is_down_now_since_its_first_failed_scrape() -> None:
    target = target_of("api-1", _series([1.0] * 30 + [0.0] * 20), LIMITS)

    assert target.down_now
    assert target.went_down == T0 + pd.Timedelta(minutes=30)
    assert (target.down_samples, target.down_transitions) == (20, 1)


def test_a_crash_loop_is_down_now_even_when_its_last_scrape_succeeded() -> None:
    flaps = [1.0] * 30 + [0.0, 0.0, 1.0] * 6 + [1.0]
    target = target_of("api-0", _series(flaps), LIMITS)

    assert target.down_now
    assert target.down_transitions == 6
    # The flaps are one outage: it began at the first of them.
    assert target.went_down == T0 + pd.Timedelta(minutes=30)


def test_one_missed_scrape_long_ago_is_not_down_now() -> None:
    target = target_of("api-2", _series([1.0] * 20 + [0.0] + [1.0] * 40), LIMITS)

    assert not target.down_now
    assert target.missed


def test_a_blip_an_hour_before_the_outage_is_not_its_start() -> None:
    values = [1.0] * 5 + [0.0] + [1.0] * 60 + [0.0] * 10
    target = target_of("api-1", _series(values), LIMITS)

    assert target.went_down == T0 + pd.Timedelta(minutes=66)


def test_targets_down_minutes_apart_did_not_go_down_together() -> None:
    first = target_of("a", _series([1.0] * 10 + [0.0] * 20), LIMITS)
    second = target_of("b", _series([1.0] * 11 + [0.0] * 19), LIMITS)
    late = target_of("c", _series([1.0] * 20 + [0.0] * 10), LIMITS)

    assert together([first, second], LIMITS["together_seconds"])
    assert not together([first, late], LIMITS["together_seconds"])


def test_restarts_are_counted_in_the_window_not_in_the_pods_lifetime() -> None:
    counts = _frame({"api-3": [37.0] * 10, "api-0": [1, 1, 2, 3, 4, 5, 5, 6, 6, 7]}, "pod")
    reasons = _frame({"api-0": [1.0] * 10}, "pod", reason="OOMKilled")

    crashes = crashes_of(counts, reasons, min_restarts=3)

    assert crashes.pods == ("api-0",)
    assert crashes.restarts == {"api-0": 6, "api-3": 0}
    assert crashes.reason == "OOMKilled"


def test_a_restart_counter_that_resets_counts_from_zero() -> None:
    counts = _frame({"api-1": [5, 6, 7, 0, 1, 2]}, "pod")

    crashes = crashes_of(counts, pd.DataFrame(), min_restarts=3)

    assert crashes.restarts == {"api-1": 4}
    assert crashes.reason is None


@pytest.mark.parametrize(
    ("code", "expiry_offset", "reason"),
    [
        (0.0, -3600.0, "certificate expired"),
        (503.0, 86400.0 * 30, "HTTP 503"),
        (0.0, None, "no HTTP response (DNS or connection)"),
        (200.0, 86400.0 * 30, "no HTTP response (DNS or connection)"),
    ],
)
def test_why_a_probe_fails(code: float, expiry_offset: float | None, reason: str) -> None:
    since = pd.Timestamp("2026-11-20 14:05", tz="UTC")
    expiry = since.timestamp() + expiry_offset if expiry_offset is not None else None

    assert probe_reason(code, expiry, since) == reason


def test_a_version_must_explain_time_down_and_crash_loops_count() -> None:
    down = target_of("api-0", _series([1.0] * 10 + [0.0, 1.0, 1.0] * 5), LIMITS)
    up = target_of("api-3", _series([1.0] * 25), LIMITS)
    outage = Outage(service="svc", targets=(down, up), since_onset={"api-0": 0.33, "api-3": 0.0})
    crashes = Crashes(restarts={"api-0": 5, "api-3": 0}, pods=("api-0",), reasons={})

    assert down_changes(outage, crashes) == {"api-0": 50.0, "api-3": 0.0}


# --- on real exporters ------------------------------------------------------------------------


def _need_lab() -> None:
    if not prometheus_available():
        pytest.skip("needs prometheus and promtool (apt-get install prometheus)")
    missing = missing_binaries([BLACKBOX_EXPORTER])
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})")


@pytest.fixture
def live_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run the workbook on an alert against a live Prometheus, with the real clock."""
    config_file = tmp_path / "workbooks.yaml"
    # Seconds of live data: a short window read at the scrape interval.
    config_file.write_text("prometheus:\n  min_step_seconds: 1\n")
    monkeypatch.setenv("WORKBOOKS_CONFIG", str(config_file))
    monkeypatch.delenv("WORKBOOKS_NOW", raising=False)
    config = load_config(config_file).model_copy(update={"archive": str(tmp_path / "archive")})
    archive = Archive(config.archive_dir)

    def run(prometheus_url: str, alertname: str, labels: dict[str, str], since: datetime):
        payload = {
            "receiver": "workbooks",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": alertname, "severity": "critical", **labels},
                    "annotations": {"summary": f"{alertname} on {labels.get('service')}"},
                    "startsAt": since.isoformat().replace("+00:00", "Z"),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": "0123456789abcdef",
                }
            ],
            "groupLabels": {"alertname": alertname},
            "commonLabels": {"alertname": alertname},
            "commonAnnotations": {},
            "externalURL": "",
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{alertname}"}}',
            "truncatedAlerts": 0,
        }
        (record,) = run_alert(
            parse_alert_group(payload),
            config=config,
            archive=archive,
            source=prometheus_url,
            runbook_id="service-down",
            lookback="2m",
        )
        assert record.status == "succeeded", record.error
        return archive.show(record.run_id)["findings"]

    yield run


def _settle(seconds: float) -> None:
    # Let Prometheus scrape (every second) what just changed, a few times over.
    time.sleep(seconds)


def test_a_failing_probe_with_its_targets_up_names_the_probe_url(tmp_path: Path, live_run) -> None:
    _need_lab()
    with ExitStack() as stack:
        web = stack.enter_context(SwitchableHttpServer())
        blackbox = stack.enter_context(start_blackbox_exporter(tmp_path / "blackbox"))
        instance = stack.enter_context(start_service_instance(tmp_path, name="api-0"))
        labels = {"service": "svc-web"}
        prometheus = stack.enter_context(
            start_live_prometheus(
                [
                    probe_target("blackbox", blackbox.address, web.url, labels),
                    ScrapeTarget("svc-web", instance.address, {**labels, "instance": "api-0"}),
                ],
                tmp_path / "prom",
            )
        )
        probe = f'probe_success{{service="svc-web",instance="{web.url}"}}'
        prometheus.wait_for(probe, lambda v: v == [1.0])
        _settle(8)
        web.failing = True
        failing_since = datetime.now(UTC)
        prometheus.wait_for(probe, lambda v: v == [0.0], timeout_seconds=20)
        _settle(8)

        findings = live_run(
            prometheus.url, "ProbeFailed", {**labels, "instance": web.url}, failing_since
        )

    top = findings[0]
    assert top["subject"]["instance"] == web.url, top
    assert top["subject"]["reason"] == "HTTP 503"
    assert top["severity"] == "critical"
    assert top["cause"] == "external"


def test_a_scraped_target_that_stops_is_named(tmp_path: Path, live_run) -> None:
    _need_lab()
    with ExitStack() as stack:
        healthy = stack.enter_context(start_service_instance(tmp_path, name="api-0"))
        stopping = stack.enter_context(start_service_instance(tmp_path, name="api-1"))
        labels = {"service": "svc-api"}
        prometheus = stack.enter_context(
            start_live_prometheus(
                [
                    ScrapeTarget("svc-api", healthy.address, {**labels, "instance": "api-0"}),
                    ScrapeTarget("svc-api", stopping.address, {**labels, "instance": "api-1"}),
                ],
                tmp_path / "prom",
            )
        )
        up = 'up{service="svc-api"}'
        prometheus.wait_for(up, lambda v: v == [1.0, 1.0])
        _settle(8)
        stopping.stop()
        down_since = datetime.now(UTC) - timedelta(seconds=1)
        prometheus.wait_for('up{instance="api-1"}', lambda v: v == [0.0], timeout_seconds=20)
        _settle(8)

        findings = live_run(prometheus.url, "ServiceDown", {"service": "svc-api"}, down_since)

    top = findings[0]
    assert top["subject"] == {"instance": "api-1"}, top
    assert top["cause"] == "instance"
    assert top["severity"] == "critical"  # half the fleet
