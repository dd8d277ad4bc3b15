"""high-cpu: its own rules on small tables, and the workbook on real exporters.

The lab test runs the real workbook (papermill, a kernel) on a HostHighCpuLoad alert against a
real Prometheus scraping the real node_exporter and two service instances every second: first a
process burning a core beside the idle service (the workbook must say the host is busy with
something else), then one service instance burning the core (it must name that instance).
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
import yaml

from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import load_config
from workbooks.runbooks.high_cpu_limits import THRESHOLDS, capped, standouts
from workbooks.runbooks.high_cpu_scope import matcher, rate_window
from workbooks.running.runner import run_alert
from workbooks.synthetic.exporters import NODE_EXPORTER, missing_binaries, start_node_exporter
from workbooks.synthetic.hostload import start_busy_process, start_service_instance
from workbooks.synthetic.live import LivePrometheus, ScrapeTarget, free_port, start_live_prometheus

HOST = "host-a"
SERVICE = "svc-lab"


def _table(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(name, now, before, now / before, now - before) for name, now, before in rows],
        columns=["instance", "current", "baseline", "ratio", "delta"],
    )


def test_one_instance_that_doubled_stands_out_not_the_largest() -> None:
    table = _table([("api-3", 2.8, 2.7), ("api-1", 2.4, 1.5), ("api-0", 1.4, 1.4)])
    found = standouts(table, min_change=1.4, gap=1.3, min_delta=0.2)
    assert found.culprits == ("api-1",)


def test_an_idle_process_that_doubles_is_noise() -> None:
    table = _table([("api-0", 0.004, 0.002), ("api-1", 1.0, 1.0)])
    assert standouts(table, min_change=1.4, gap=1.3, min_delta=0.2).culprits == ()


def test_a_lone_instance_is_named_when_it_moved() -> None:
    # A host alert sees one node and often one instance: nothing to stand out from.
    assert standouts(_table([("api-1", 1.0, 0.01)]), min_change=1.4, gap=1.3).culprits == ("api-1",)
    assert standouts(_table([("api-1", 1.0, 0.9)]), min_change=1.4, gap=1.3).culprits == ()


def test_load_everywhere_names_no_instance() -> None:
    table = _table([("api-0", 1.8, 1.0), ("api-1", 1.9, 1.1), ("api-2", 1.6, 0.9)])
    found = standouts(table, min_change=1.4, gap=1.3, min_delta=0.2)
    assert found.culprits == () and found.spread


def test_matchers_escape_values_and_match_nothing_when_empty() -> None:
    assert matcher(("127.0.0.1:9100",)) == r"127\.0\.0\.1:9100"
    assert matcher(("a", "b")) == "a|b"
    assert matcher(None) == ".+"
    assert matcher(()) == ""


def test_rate_window_follows_the_lookback() -> None:
    assert rate_window(timedelta(hours=2)) == "300s"
    assert rate_window(timedelta(minutes=2)) == "10s"
    assert rate_window(timedelta(minutes=24)) == "120s"


def test_the_symptom_ladder_stops_at_warning() -> None:
    grade = capped(THRESHOLDS.resolve(load_config(env={})).ladder("cpu_ratio"))
    assert (grade(5.0), grade(1.4), grade(1.0)) == ("warning", "warning", "info")


# --- the lab ------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _alert(labels: dict[str, str], starts_at: datetime) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "CPU high"},
        "startsAt": _iso(starts_at),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": "0000000000000001",
    }
    return {
        "receiver": "workbooks",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }


@pytest.fixture
def lab_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # Second-resolution steps for a look of a minute; a shared CI machine is noisy, so a
    # neighbour counts from 0.3 of a core (the default is 0.5).
    path = tmp_path / "workbooks.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "archive": str(tmp_path / "archive"),
                "prometheus": {"min_step_seconds": 1},
                "runbooks": {"high-cpu": {"thresholds": {"neighbour_cores_warning": 0.3}}},
            }
        )
    )
    monkeypatch.setenv("WORKBOOKS_CONFIG", str(path))
    yield load_config()


def _run(
    config: Any,
    prometheus: LivePrometheus,
    labels: dict[str, str],
    onset: datetime,
    baseline_seconds: float,
) -> list[dict[str, Any]]:
    # The window runs from 20 s before the alert (10 s before the onset) to now; the baseline
    # is that window `baseline_seconds` earlier, in the quiet first phase.
    group = parse_alert_group(_alert(labels, onset + timedelta(seconds=10)))
    archive = Archive(config.archive_dir)
    (record,) = run_alert(
        group,
        config=config,
        archive=archive,
        source=prometheus.url,
        runbook_id="high-cpu",
        lookback="20s",
        baseline=f"{int(baseline_seconds)}s",
    )
    assert record.status == "succeeded", record.error
    return archive.show(record.run_id)["findings"]


def _titles(findings: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(f["severity"], f["title"], f.get("cause")) for f in findings]


def _causes(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in findings if f.get("cause") and f["severity"] != "info"]


def _wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


@pytest.mark.alone  # another test beside it would be a busy neighbour of its own
def test_workbook_tells_a_busy_neighbour_from_a_busy_service_instance(
    tmp_path: Path, lab_config: Any
) -> None:
    missing = missing_binaries([NODE_EXPORTER, "prometheus"])
    if missing:
        pytest.skip(f"needs the Debian packages of {', '.join(missing)}")
    busy_port = free_port()
    with ExitStack() as stack:
        node = stack.enter_context(start_node_exporter(tmp_path / "node"))
        quiet = stack.enter_context(start_service_instance(tmp_path, name="api-0"))
        idle = start_service_instance(tmp_path, name="api-1-idle", port=busy_port)
        stack.callback(idle.stop)
        on_host = {"service": SERVICE, "node": HOST}
        targets = [
            ScrapeTarget("node", node.address, {"instance": HOST}),
            ScrapeTarget("svc", quiet.address, {**on_host, "instance": "api-0"}),
            ScrapeTarget("svc", idle.address, {**on_host, "instance": "api-1"}),
        ]
        prometheus = stack.enter_context(start_live_prometheus(targets, tmp_path / "prom"))
        prometheus.wait_for(f'process_cpu_seconds_total{{service="{SERVICE}",node="{HOST}"}}')
        started = datetime.now(UTC)

        # Timeline: 75 s quiet (the baselines), 40 s of a neighbour and a run, then api-1 busy.
        neighbour_at = started + timedelta(seconds=75)
        _wait_until(neighbour_at)
        with start_busy_process(tmp_path, name="neighbour"):
            _wait_until(neighbour_at + timedelta(seconds=40))
            findings = _run(
                lab_config,
                prometheus,
                {"alertname": "HostHighCpuLoad", "instance": HOST, "severity": "warning"},
                neighbour_at,
                baseline_seconds=55,
            )
        top = findings[0]
        assert top["cause"] == "instance" and top["subject"] == {"instance": HOST}, _titles(
            findings
        )
        assert "busy" in top["title"] and "something else" in top["title"]
        assert not any(
            set(f["subject"].get("instance", [])) & {"api-0", "api-1"} for f in _causes(findings)
        ), "the idle service instances must not be blamed"

        idle.stop()
        busy_at = datetime.now(UTC)
        stack.enter_context(
            start_service_instance(tmp_path, busy=True, name="api-1", port=busy_port)
        )
        _wait_until(busy_at + timedelta(seconds=40))
        findings = _run(
            lab_config,
            prometheus,
            {"alertname": "HighCpuUsage", "service": SERVICE, "severity": "warning"},
            busy_at,
            # Back to the quiet phase: the window shifted to 55..5 s before the neighbour.
            baseline_seconds=(busy_at - neighbour_at).total_seconds() + 45,
        )
    top = findings[0]
    assert top["cause"] == "instance", _titles(findings)
    assert top["subject"]["instance"] in ("api-1", ["api-1"]), _titles(findings)
    assert top["severity"] in ("critical", "warning")
