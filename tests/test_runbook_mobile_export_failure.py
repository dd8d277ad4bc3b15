"""mobile-export-failure: its steps on small hand-built frames, and its queries on a real
Pushgateway scraped by a real Prometheus.

Each frame is what the catalog query returns: a failure share per target (and version, or
reason), an unsupported-op count, artifact sizes and budgets, parity errors, toolchain info. The
whole workbook runs on the synthetic cases in tests/test_e2e_runbooks.py and
tests/test_replay_cases.py.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workbooks.core.config import Config, RunbookSettings
from workbooks.core.findings import Finding, ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import mobile_export_failure
from workbooks.runbooks.mobile_export_failure_data import Failing, levels, literal
from workbooks.synthetic.live import ScrapeTarget, free_port, http_ok, scrape_config, start_process

START = pd.Timestamp("2026-11-20 12:00", tz="UTC")
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
MIB = 1024**2
LABELS = {"alertname": "MobileExportFailure", "job": "ci-mobile-export", "model": "mm-llm"}


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(labels: dict[str, str] | None = None, config: Config | None = None) -> Incident:
    return Incident(
        runbook="mobile-export-failure",
        alert_name="MobileExportFailure",
        labels=LABELS if labels is None else labels,  # no service, as the pipeline's alerts
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=config or Config(),
    )


def frame(
    series: dict[tuple[str, ...], tuple[float, float]],
    labels: tuple[str, ...],
    *,
    since: pd.Timestamp = ONSET,
    noise: float = 0.0,
    start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One series per key (label values in `labels` order): `before` until `since`, then
    `after`; a series starts at `start` (a version released then) when given."""
    rng = np.random.default_rng(3)
    parts = []
    for key, (before, after) in series.items():
        values = np.where(since <= TIMES, after, before) * rng.lognormal(0, noise, len(TIMES))
        part = pd.DataFrame({"timestamp": TIMES, **dict(zip(labels, key, strict=True))})
        part["value"] = values
        parts.append(part if start is None or "2.4.0" not in key else part[start <= TIMES])
    return pd.concat(parts, ignore_index=True)


def result(
    name: str,
    current: pd.DataFrame,
    baseline: pd.DataFrame | None,
    unit: str | None = "ratio",
) -> QueryResult:
    window = incident().window
    return QueryResult(name, name, "hand-built", unit, window, 60, current, baseline)


def causes(found: Incident) -> list[Finding]:
    return [f for f in ranked(found.findings) if f.cause is not None]


BY_VERSION = ("target", "model_version")
USUAL = {"tflite": 0.02, "coreml": 0.02, "onnx": 0.01, "executorch": 0.5}


def shares(broken: dict[tuple[str, str], float], *, since: pd.Timestamp = ONSET) -> QueryResult:
    """Failure shares per target and version: the usual ones, `broken` after `since`; 2.4.0
    exported from 13:55 on, 2.3.1 all along."""
    series = {}
    for target, usual in USUAL.items():
        for version in ("2.3.1", "2.4.0"):
            series[(target, version)] = (usual, broken.get((target, version), usual))
    now = frame(series, BY_VERSION, since=since, start=ONSET - pd.Timedelta(minutes=10))
    before = frame({k: (v[0], v[0]) for k, v in series.items() if k[1] == "2.3.1"}, BY_VERSION)
    return result("mobile_export_failure_share_by_version", now, before)


# --- scope: the alert's labels ---------------------------------------------------------------


def test_the_alert_labels_become_exact_matchers_and_a_missing_model_is_said() -> None:
    assert literal("torch.onnx (v2)") == r"torch\.onnx \(v2\)"
    assert literal("svc-a-mobile-export") == "svc-a-mobile-export"  # readable: `-` is plain

    full = incident()
    assert mobile_export_failure.scope(full) == {"model_re": "mm-llm", "job_re": "ci-mobile-export"}
    assert full.findings == []

    bare = incident({"alertname": "ModelExportFailed"})
    assert mobile_export_failure.scope(bare) == {"model_re": ".+", "job_re": ".+"}
    (warning,) = bare.findings
    assert warning.severity == "warning"
    assert "no `model` label" in warning.title
    assert "sum by" in warning.recommendation


# --- 3.1 which target and reason rose ----------------------------------------------------------

REASONS = ("target", "reason")


def test_the_target_whose_failures_rose_is_named_not_the_one_that_fails_most() -> None:
    case = incident()
    series = {
        ("executorch", "timeout"): (0.5, 0.5),  # most failures, as every day
        ("tflite", "timeout"): (0.02, 0.02),
        ("tflite", "unsupported_op"): (0.0, 0.3),
    }
    by_reason = result(
        "mobile_export_failure_share_by_reason",
        frame(series, REASONS, noise=0.02),
        frame({k: (v[0], v[0]) for k, v in series.items()}, REASONS, noise=0.02),
    )
    failing = mobile_export_failure.results(case, shares({}), by_reason)

    assert failing is not None
    assert failing.onset is not None and abs(failing.onset - ONSET) <= pd.Timedelta(minutes=3)
    assert failing.new_versions == ("2.4.0",)
    (rose,) = [f for f in case.findings if f.severity != "info"]
    assert rose.subject == {"target": "tflite", "reason": "unsupported_op"}
    assert rose.severity == "critical"  # +30 points of tflite's runs
    assert "executorch's timeout (50.0% of runs) is as usual" in rose.title
    assert rose.cause is None  # a symptom: the cause steps name why


def test_levels_compare_each_combination_with_the_same_span_a_day_earlier() -> None:
    table = levels(shares({("tflite", "2.4.0"): 1.0}), list(BY_VERSION), since=ONSET)
    row = table.set_index(list(BY_VERSION)).loc[("tflite", "2.4.0")]
    assert row["current"] == pytest.approx(1.0)
    assert np.isnan(row["baseline"])  # a new version has no baseline
    assert row["first"] == ONSET - pd.Timedelta(minutes=10)


# --- 3.2 a new op -----------------------------------------------------------------------------

OPS = ("model_version", "target", "op")
FLASH = "aten::_scaled_dot_product_flash_attention"


def failing_since(onset: pd.Timestamp = ONSET) -> Failing:
    return Failing(since=onset, onset=onset, new_versions=("2.4.0",))


def test_a_new_op_on_one_target_names_the_version_target_and_op() -> None:
    case = incident()
    ops = result(
        "mobile_export_failure_unsupported_ops",
        frame(
            {("2.4.0", "tflite", FLASH): (0.0, 3.0), ("2.3.1", "executorch", "old"): (0, 0)}, OPS
        ),
        frame({("2.3.1", "executorch", "old"): (0.0, 0.0)}, OPS),
        unit="count",
    )
    by_version = shares({("tflite", "2.4.0"): 1.0})
    mobile_export_failure.unsupported_ops(case, ops, by_version, failing_since())

    (cause,) = causes(case)
    assert cause.subject == {"model_version": "2.4.0", "target": "tflite", "op": FLASH}
    assert cause.cause == "rollout"
    assert cause.severity == "critical"
    assert "coreml, executorch, onnx export 2.4.0 as usual" in cause.title
    assert f"Add {FLASH} to tflite's delegate/fallback list" in cause.recommendation


def test_an_op_that_was_hit_a_day_earlier_too_is_no_new_op() -> None:
    case = incident()
    old = {("2.3.1", "coreml", "aten::unfold"): (2.0, 2.0)}
    ops = result("mobile_export_failure_unsupported_ops", frame(old, OPS), frame(old, OPS), "count")
    mobile_export_failure.unsupported_ops(case, ops, shares({}), failing_since())
    assert causes(case) == []


# --- 3.3 size budget -------------------------------------------------------------------------


def test_the_artifact_over_its_own_budget_is_named_not_the_largest_one() -> None:
    case = incident()
    sizes = {
        ("onnx", "2.4.0"): (0, 440 * MIB),  # the largest, within its 512 MiB
        ("coreml", "2.4.0"): (0, 240 * MIB),
        ("coreml", "2.3.1"): (185 * MIB, 185 * MIB),
        ("executorch", "2.4.0"): (0, 200 * MIB),
    }
    budgets = {
        (t,): (b * MIB, b * MIB) for t, b in (("onnx", 512), ("coreml", 224), ("executorch", 256))
    }
    mobile_export_failure.size_budget(
        case,
        result("mobile_export_failure_artifact_bytes", frame(sizes, BY_VERSION), None, "bytes"),
        result("mobile_export_failure_budget_bytes", frame(budgets, ("target",)), None, "bytes"),
        failing_since(),
    )
    (cause,) = causes(case)
    assert cause.subject == {"target": "coreml", "reason": "size_budget", "model_version": "2.4.0"}
    assert cause.cause == "limit"
    assert cause.observed == pytest.approx(240 * MIB) and cause.baseline == pytest.approx(224 * MIB)
    assert "7.1% (16.00 MiB) over coreml's 224.00 MiB budget" in cause.title
    assert "2.3.1's was 185.00 MiB" in cause.title
    assert "by at least 16.00 MiB" in cause.recommendation


# --- 3.4 toolchain ---------------------------------------------------------------------------

TOOLCHAIN = ("target", "toolchain", "toolchain_version")


def toolchain_info(target: str = "onnx") -> QueryResult:
    info = pd.concat(
        [
            frame({(target, "torch.onnx", "2.4.1"): (1, np.nan)}, TOOLCHAIN),
            frame({(target, "torch.onnx", "2.5.0"): (np.nan, 1)}, TOOLCHAIN),
            frame({("tflite", "ai-edge-torch", "0.2.0"): (1, 1)}, TOOLCHAIN),
        ]
    ).dropna()
    return result("mobile_export_failure_toolchains", info, None, "count")


def test_a_toolchain_upgrade_that_broke_every_version_is_the_cause_not_the_release() -> None:
    case = incident()
    by_version = shares({("onnx", "2.3.1"): 1.0, ("onnx", "2.4.0"): 1.0})
    mobile_export_failure.toolchains(case, toolchain_info(), by_version, failing_since())

    (cause,) = causes(case)
    assert cause.subject == {
        "target": "onnx",
        "toolchain": "torch.onnx",
        "toolchain_version": "2.5.0",
    }
    assert cause.cause == "config"
    assert "model_version" not in cause.subject
    assert "2.4.0 was released in this window too" in cause.detail
    assert "Pin torch.onnx back to 2.4.1" in cause.recommendation


def test_a_toolchain_change_that_one_version_alone_fails_after_is_not_blamed() -> None:
    case = incident()
    by_version = shares({("onnx", "2.4.0"): 1.0})
    mobile_export_failure.toolchains(case, toolchain_info(), by_version, failing_since())

    assert causes(case) == []
    (said,) = case.findings
    assert said.severity == "info"
    assert "do not follow it: only 2.4.0 broke there" in said.title


# --- 3.5 parity --------------------------------------------------------------------------------


def parity_result(last: float) -> QueryResult:
    series = {("executorch", "2.3.1"): (0.0015, last), ("tflite", "2.3.1"): (0.002, 0.002)}
    baseline = {k: (v[0], v[0]) for k, v in series.items()}
    return result(
        "mobile_export_failure_parity", frame(series, BY_VERSION), frame(baseline, BY_VERSION), None
    )


def test_parity_above_the_tolerance_names_target_and_version_with_the_value() -> None:
    case = incident()
    mobile_export_failure.parity(case, parity_result(0.021), failing_since())

    (cause,) = causes(case)
    assert cause.subject == {"target": "executorch", "model_version": "2.3.1"}
    assert cause.cause == "data"
    assert cause.severity == "warning"  # under parity_error_critical, no symptom recorded here
    assert "largest error 0.021 against 0.01 allowed (0.0015 a day earlier)" in cause.title


def test_the_parity_tolerance_is_the_teams_to_set() -> None:
    loose = Config(
        runbooks={
            "mobile-export-failure": RunbookSettings(
                thresholds={"parity_error_warning": 0.03, "parity_error_critical": 0.1}
            )
        }
    )
    case = incident(config=loose)
    mobile_export_failure.parity(case, parity_result(0.021), failing_since())
    assert causes(case) == []


# --- the verdict -------------------------------------------------------------------------------


def test_nothing_wrong_is_a_quiet_run() -> None:
    case = incident()
    steady = {("executorch", "timeout"): (0.5, 0.5), ("tflite", "timeout"): (0.02, 0.02)}
    by_reason = result(
        "mobile_export_failure_share_by_reason",
        frame(steady, REASONS, noise=0.02),
        frame(steady, REASONS, noise=0.02),
    )
    failing = mobile_export_failure.results(case, shares({}), by_reason)
    mobile_export_failure.parity(case, parity_result(0.0015), failing)
    mobile_export_failure.resolution(case)

    top = ranked(case.findings)[0]
    assert top.title.startswith("A quiet run")
    assert not [f for f in case.findings if f.severity != "info"]


# --- live: a real Pushgateway scraped by a real Prometheus -------------------------------------
#
# The pipeline pushes through a Pushgateway and Prometheus scrapes it with `honor_labels: true`
# (the Pushgateway's documented setup), so the series keep the pushed `job` and carry no
# `service` nor `instance`: the workbook's queries must select the alert's pipeline by `job` and
# `model` alone, and the budget and toolchain series (pushed without `model`) by `job`.

PIPELINE = "ci-mobile-export"


def _push(gateway: str, text: str, **grouping: str) -> None:
    path = "/".join(f"{name}/{value}" for name, value in grouping.items())
    request = urllib.request.Request(f"{gateway}/metrics/{path}", data=text.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status in (200, 202)


def _runs(failures: dict[tuple[str, str], float], successes: dict[str, float], version: str) -> str:
    lines = ["# TYPE mobile_export_runs_total counter"]
    for target, count in successes.items():
        lines.append(
            f'mobile_export_runs_total{{model_version="{version}",target="{target}",'
            f'result="success"}} {count}'
        )
    for (target, reason), count in failures.items():
        lines.append(
            f'mobile_export_runs_total{{model_version="{version}",target="{target}",'
            f'result="failure",reason="{reason}"}} {count}'
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def pushgateway_lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(Pushgateway URL, Prometheus URL), Prometheus scraping the gateway every second."""
    missing = [b for b in ("prometheus-pushgateway", "prometheus") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"needs {missing} (scripts/install-system-deps)")
    gateway_address = f"127.0.0.1:{free_port()}"
    gateway = start_process(
        "pushgateway",
        ["prometheus-pushgateway", f"--web.listen-address={gateway_address}"],
        tmp_path,
        address=gateway_address,
        ready=lambda: http_ok(f"http://{gateway_address}/-/ready"),
    )
    config = scrape_config([ScrapeTarget("pushgateway", gateway_address)], 1.0)
    config["scrape_configs"][0]["honor_labels"] = True
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"
    try:
        prometheus = start_process(
            "prometheus",
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={address}",
            ],
            tmp_path,
            address=address,
            ready=lambda: http_ok(f"http://{address}/-/ready"),
        )
    except Exception:
        gateway.stop()
        raise
    try:
        yield gateway.url, prometheus.url
    finally:
        prometheus.stop()
        gateway.stop()


def _scraped(prometheus: str, expr: str, want: int) -> None:
    deadline = time.monotonic() + 20
    query = urllib.parse.urlencode({"query": expr})
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as answer:
            if len(json.load(answer)["data"]["result"]) >= want:
                return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus never had {want} series for {expr}")


def test_a_pushgateway_pipeline_is_selected_by_the_alerts_job_and_model(
    pushgateway_lab: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, prometheus = pushgateway_lab
    budgets = (
        "# TYPE mobile_export_artifact_budget_bytes gauge\n"
        'mobile_export_artifact_budget_bytes{target="tflite"} 268435456\n'
        "# TYPE mobile_export_toolchain_info gauge\n"
        'mobile_export_toolchain_info{target="tflite",toolchain="ai-edge-torch",'
        'toolchain_version="0.3.0"} 1\n'
    )
    _push(gateway, budgets, job=PIPELINE)
    _push(gateway, budgets.replace("268435456", "1"), job="other-pipeline")
    ours = {"tflite": 10.0, "coreml": 10.0}
    # Another pipeline exporting the same model for onnx, and another model in our pipeline.
    _push(
        gateway,
        _runs({("onnx", "timeout"): 9}, {"onnx": 1}, "2.4.0"),
        job="other-pipeline",
        model="mm-llm",
    )
    _push(
        gateway,
        _runs({("coreml", "timeout"): 9}, {"coreml": 1}, "1.0"),
        job=PIPELINE,
        model="other-model",
    )
    _push(
        gateway,
        _runs({("tflite", "unsupported_op"): 0}, ours, "2.4.0"),
        job=PIPELINE,
        model="mm-llm",
    )
    _scraped(prometheus, "mobile_export_runs_total", 7)
    time.sleep(2)
    # Five more tflite runs, all failing on an unsupported op; coreml's succeed.
    _push(
        gateway,
        _runs({("tflite", "unsupported_op"): 5}, {"tflite": 10, "coreml": 15}, "2.4.0"),
        job=PIPELINE,
        model="mm-llm",
    )
    _scraped(prometheus, 'mobile_export_runs_total{reason="unsupported_op"} > 0', 1)
    time.sleep(2)

    monkeypatch.setenv("WORKBOOKS_NOW", pd.Timestamp.now(tz="UTC").isoformat())
    case = Incident(
        runbook="mobile-export-failure",
        alert_name="MobileExportFailure",
        labels={"alertname": "MobileExportFailure", "job": PIPELINE, "model": "mm-llm"},
        starts_at=(pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=6)).isoformat(),
        lookback="10m",
        source=prometheus,
        config=Config(),
    )
    scope = mobile_export_failure.scope(case)
    by_reason = case.query("mobile_export_failure_share_by_reason", baseline=False, **scope)
    budget = case.query("mobile_export_failure_budget_bytes", baseline=False, **scope)
    tools = case.query("mobile_export_failure_toolchains", baseline=False, **scope)

    assert set(by_reason.current["target"]) == {"tflite"}  # only our pipeline's failures
    assert "service" not in by_reason.current and "instance" not in by_reason.current
    last = by_reason.current.sort_values("timestamp").iloc[-1]
    # The five runs of the window all failed (tflite's successes stood still).
    assert (last["reason"], last["value"]) == ("unsupported_op", pytest.approx(1.0))
    assert list(budget.current["value"].unique()) == [268435456]  # not the other pipeline's
    assert set(tools.current["toolchain_version"]) == {"0.3.0"}

    # An alert without `job` reads every pipeline of the model, and says so only for `model`.
    wide = Incident(
        runbook="mobile-export-failure",
        alert_name="MobileExportFailure",
        labels={"alertname": "MobileExportFailure", "model": "mm-llm"},
        starts_at=case.starts_at,
        lookback="10m",
        source=prometheus,
        config=Config(),
    )
    every = wide.query(
        "mobile_export_failure_share_by_target", baseline=False, **mobile_export_failure.scope(wide)
    )
    assert set(every.current["target"]) == {"tflite", "coreml", "onnx"}
    assert not [f for f in wide.findings if "no `model` label" in f.title]


# --- section 2 and the inconclusive verdict ------------------------------------------------------


def test_what_changed_says_one_target_or_all_and_lists_releases_and_toolchain_changes() -> None:
    case = incident()
    by_target = result(
        "mobile_export_failure_share_by_target",
        frame({("tflite",): (0.02, 0.5), ("executorch",): (0.5, 0.5)}, ("target",)),
        frame({("tflite",): (0.02, 0.02), ("executorch",): (0.5, 0.5)}, ("target",)),
    )
    mobile_export_failure.what_changed(case, by_target, shares({}), toolchain_info())

    (said,) = case.findings
    assert said.severity == "info" and said.cause is None
    assert said.subject == {"target": "tflite"}
    assert said.title.startswith("1 of 2 targets fails more than usual (tflite)")
    assert "model version 2.4.0 (first exported 13:55 UTC)" in said.title
    assert "toolchain 2.4.1 → 2.5.0 on onnx (14:05 UTC)" in said.title


def test_failures_no_cause_step_explains_end_inconclusive_with_what_was_ruled_out() -> None:
    case = incident()
    # coreml's conversion errors rise, and no op, size, toolchain or parity explains them.
    series = {("coreml", "conversion_error"): (0.02, 0.4), ("executorch", "timeout"): (0.5, 0.5)}
    by_reason = result(
        "mobile_export_failure_share_by_reason",
        frame(series, REASONS, noise=0.02),
        frame({k: (v[0], v[0]) for k, v in series.items()}, REASONS, noise=0.02),
    )
    failing = mobile_export_failure.results(case, shares({("coreml", "2.3.1"): 0.4}), by_reason)
    mobile_export_failure.toolchains(case, toolchain_info("tflite"), shares({}), failing)
    mobile_export_failure.parity(case, parity_result(0.0015), failing)
    mobile_export_failure.resolution(case)

    verdicts = [f for f in case.findings if f.title.startswith("Nothing checked here explains")]
    (verdict,) = verdicts
    assert verdict.severity == "warning"
    assert "coreml conversion_error: rose 2.0% → 40.0%" in verdict.detail
    assert "parity: highest" in verdict.detail
    assert not causes(case)
