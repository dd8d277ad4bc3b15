"""android-deployment and ios-deployment: their own rules on small hand-built frames.

Each incident is the platform's bundled demo (offline, its recorded window); the query results
are built here, so each test plants one situation and checks what an on-call engineer reads:
which slice is named, whether the release is blamed, and what the store instruction says.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbooks.core.config import Config, RunbookSettings
from workbooks.core.errors import ConfigError, UnknownRunbookError
from workbooks.core.findings import ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import mobile_deployment, steps
from workbooks.runbooks.mobile_deployment_crashes import crash_table
from workbooks.runbooks.mobile_deployment_platform import (
    ANDROID,
    IOS,
    find_release,
    newest_first,
    platform_of,
)

START = pd.Timestamp("2026-11-20 12:10", tz="UTC")  # the demo evidence's recorded window
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
NEW, PREVIOUS = "7.43.0", "7.42.0"


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(
    runbook: str = "android-deployment", *, labels: dict[str, str] | None = None, **kw: object
) -> Incident:
    return Incident(
        runbook=runbook,
        alert_name="AndroidDeploymentIssue",
        labels={"service": "photos"} if labels is None else labels,
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=kw.get("config") or Config(),  # type: ignore[arg-type]
    )


def frame(label: str, rates: dict[tuple[str, str], float], *, new_from: pd.Timestamp = ONSET):
    """Per-second rates by (app_version, label value); the new version only from `new_from`."""
    parts = []
    for (version, value), rate in rates.items():
        times = TIMES[new_from <= TIMES] if version == NEW else TIMES
        parts.append(
            pd.DataFrame({"timestamp": times, "app_version": version, label: value, "value": rate})
        )
    return pd.concat(parts, ignore_index=True)


def result(name: str, current: pd.DataFrame, baseline: pd.DataFrame | None, unit: str):
    return QueryResult(name, name, "hand-built", unit, incident().window, 60, current, baseline)


# Android 15 is the big OS version; Android 12 a 7% slice where the new version crashes 5x.
SESSIONS = {
    (PREVIOUS, "15"): 30.0,
    (PREVIOUS, "12"): 5.0,
    (NEW, "15"): 8.0,
    (NEW, "12"): 1.4,
}
CRASHES = {
    (PREVIOUS, "15"): 30.0 * 0.0015,
    (PREVIOUS, "12"): 5.0 * 0.003,
    (NEW, "15"): 8.0 * 0.0015,
    (NEW, "12"): 1.4 * 0.015,
}


def test_versions_sort_as_numbers() -> None:
    assert newest_first(["7.9.3", "7.10.0", "7.9.3", "7.10.0-beta"])[:2] == (
        "7.10.0-beta",
        "7.10.0",
    )
    assert newest_first(["7.9.3", "7.10.0"]) == ("7.10.0", "7.9.3")


def test_the_release_is_the_newest_version_with_its_share_now() -> None:
    sessions = frame("os_version", SESSIONS)
    rollout = pd.DataFrame(
        {"timestamp": [END, END], "app_version": [PREVIOUS, NEW], "value": [1.0, 0.2]}
    )
    found = find_release(sessions, rollout)
    assert (found.new, found.previous, found.share) == (NEW, PREVIOUS, 0.2)
    assert found.since == ONSET


def test_a_small_os_version_with_a_big_crash_rate_is_the_culprit_not_the_largest_count() -> None:
    table = crash_table(
        frame("os_version", SESSIONS),
        frame("os_version", CRASHES),
        by="os_version",
        new=NEW,
        previous=PREVIOUS,
        since=ONSET,
        min_sessions=1000,
        min_crashes=10,
    )
    found = steps.classify(table, by="os_version", min_change=1.5, gap=1.4)
    assert found.culprits == ("12",)
    assert (
        table.set_index("os_version").loc["15", "all_crashes"]
        > table.set_index("os_version").loc["12", "all_crashes"]
    )
    assert found.change == pytest.approx(5.0, rel=0.01)


def test_a_slice_with_too_few_crashes_is_not_judged() -> None:
    crashes = dict(CRASHES) | {(NEW, "12"): 0.001}  # ~2 crashes in 40 minutes
    table = crash_table(
        frame("os_version", SESSIONS),
        frame("os_version", crashes),
        by="os_version",
        new=NEW,
        previous=PREVIOUS,
        since=ONSET,
        min_sessions=1000,
        min_crashes=10,
    )
    row = table.set_index("os_version").loc["12"]
    assert not row["judged"] and math.isnan(row["ratio"])


def test_each_store_says_stop_in_its_own_terms_with_the_share() -> None:
    android = ANDROID.halt(NEW, 0.2)
    assert "Halt the staged rollout of 7.43.0 in Google Play (it stands at 20%)" in android
    assert "status: halted" in android
    ios = IOS.halt(NEW, 0.1)
    assert "Pause the phased release of 7.43.0 in App Store Connect (it stands at 10%" in ios
    assert "30 days" in ios and "7-day" in ios


def test_the_platform_comes_from_the_runbook() -> None:
    assert platform_of(incident("ios-deployment")) is IOS
    with pytest.raises(UnknownRunbookError, match="android-deployment"):
        platform_of(Incident(runbook="high-latency", alert_name="x", starts_at=ONSET.isoformat()))


def test_the_crashing_os_version_is_named_with_the_halt_command() -> None:
    run = incident()
    sessions = result("sessions", frame("os_version", SESSIONS), None, "per_second")
    crashes = result("crashes", frame("os_version", CRASHES), None, "per_second")
    found = find_release(sessions.current, None)
    mobile_deployment.crash_breakdown(run, found, sessions, crashes, by="os_version")
    top = ranked(run.findings)[0]
    assert top.cause == "rollout" and top.severity == "critical"
    assert top.subject == {"app_version": NEW, "os_version": "12"}
    assert "OS version 15 has the most crashes" in top.title
    assert top.recommendation and "Halt the staged rollout of 7.43.0" in top.recommendation


def by_version(data: pd.DataFrame) -> pd.DataFrame:
    """What the by-version queries return: the OS versions summed."""
    return data.groupby(["timestamp", "app_version"], as_index=False)["value"].sum()


def test_crashes_up_on_every_version_blame_no_release_and_do_not_halt() -> None:
    run = incident("ios-deployment")
    up = {key: rate * 2.5 for key, rate in CRASHES.items()}
    up[(NEW, "12")] = 1.4 * 0.003 * 2.5  # the new version crashes as the previous one does
    sessions_before = frame("os_version", {k: r for k, r in SESSIONS.items() if k[0] != NEW})
    crashes_before = frame("os_version", {k: r for k, r in CRASHES.items() if k[0] != NEW})
    sessions = result("sessions", frame("os_version", SESSIONS), sessions_before, "per_second")
    crashes = result("crashes", frame("os_version", up), crashes_before, "per_second")
    found = find_release(sessions.current, None)
    versions = (
        result(r.name, by_version(r.current), by_version(r.baseline), r.unit)
        for r in (sessions, crashes)
    )
    mobile_deployment.crash_free(run, found, *versions)
    mobile_deployment.crash_breakdown(run, found, sessions, crashes, by="os_version")
    top = ranked(run.findings)[0]
    assert top.cause == "external"
    assert "the release is not the cause" in top.title
    assert not any(f.cause == "rollout" for f in run.findings)
    decision = mobile_deployment.rollout_decision(run, found)
    assert "do not halt" in decision and "phased release" in decision


def test_an_alert_without_the_app_label_says_how_to_fix_it() -> None:
    run = incident(labels={"alertname": "AndroidDeploymentIssue"})
    sessions = result("sessions", frame("os_version", SESSIONS), None, "per_second")
    empty = result("rollout", sessions.current.iloc[0:0], None, "ratio")
    mobile_deployment.release(run, sessions, empty)
    first = run.findings[0]
    assert first.severity == "warning" and "no `service` label" in first.title
    assert first.recommendation and "by (...)" in first.recommendation


def _latency(rows: dict[tuple[str, str], tuple[float, float]]) -> tuple[pd.DataFrame, ...]:
    current, baseline = [], []
    for (backend, device), (before, after) in rows.items():
        values = [after if t >= ONSET else before for t in TIMES]
        labels = {"backend": backend, "device_class": device}
        current.append(pd.DataFrame({"timestamp": TIMES, **labels, "value": values}))
        baseline.append(pd.DataFrame({"timestamp": TIMES, **labels, "value": before}))
    return pd.concat(current, ignore_index=True), pd.concat(baseline, ignore_index=True)


def test_the_backend_that_moved_is_named_not_the_slowest_device_class() -> None:
    run = incident("ios-deployment")
    current, baseline = _latency(
        {
            ("gpu", "high_end"): (0.040, 0.110),
            ("cpu", "low_end"): (0.480, 0.490),
            ("ane", "mid_range"): (0.040, 0.041),
        }
    )
    p95 = result("p95", current, baseline, "seconds")
    found = find_release(frame("os_version", SESSIONS), None)
    mobile_deployment.latency(run, p95, found)
    top = ranked(run.findings)[0]
    assert top.subject == {"backend": "gpu", "device_class": "high_end"}
    assert "cpu on low_end is the slowest" in top.title


def test_a_backend_slower_on_the_new_version_alone_is_the_release() -> None:
    run = incident()
    current, baseline = _latency(
        {("nnapi", "low_end"): (0.240, 0.440), ("gpu", "high_end"): (0.04, 0.04)}
    )
    by_version = pd.concat(
        [
            current.assign(app_version=NEW, value=current["value"] * 1.8),
            current.assign(app_version=PREVIOUS, value=baseline["value"]),
        ],
        ignore_index=True,
    )
    found = find_release(frame("os_version", SESSIONS), None)
    mobile_deployment.latency(
        run,
        result("p95", current, baseline, "seconds"),
        found,
        result("p95_by_version", by_version, None, "seconds"),
    )
    top = ranked(run.findings)[0]
    assert top.cause == "rollout"
    assert top.subject == {"app_version": NEW, "backend": "nnapi", "device_class": "low_end"}
    assert top.recommendation and top.recommendation.startswith("Halt the staged rollout")


def test_thresholds_are_per_runbook_and_checked() -> None:
    config = Config(runbooks={"ios-deployment": RunbookSettings(thresholds={"min_crashes": 3})})
    assert IOS.thresholds.resolve(config)["min_crashes"] == 3
    assert ANDROID.thresholds.resolve(config)["min_crashes"] == 10
    bad = Config(runbooks={"ios-deployment": RunbookSettings(thresholds={"min_crash": 3})})
    with pytest.raises(ConfigError, match="min_crashes"):
        IOS.thresholds.resolve(bad)
