"""anomalous-traffic: a runbook's own default baseline, the weekly scenarios, and its steps.

The steps run on the evidence recorded from a real Prometheus (tests/data/cases/at-*), so they
read what the workbook reads; the end-to-end verdicts are test_e2e_runbooks / test_replay_cases'.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from workbooks.authoring.lint import lint_notebook
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config, RunbookSettings
from workbooks.core.errors import UnknownRunbookError
from workbooks.notebook.catalog import Catalog
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.notebook.sources import Window
from workbooks.runbooks import anomalous_traffic
from workbooks.running.investigate import open_workbook
from workbooks.running.routing import read_runbook
from workbooks.running.runner import workbook_parameters
from workbooks.synthetic.scenarios import make_scenario
from workbooks.synthetic.scenarios.anomalous_traffic import client_rates
from workbooks.synthetic.scenarios.scenario import CASE_ONSET

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "anomalous-traffic.ipynb"
CASES = ROOT / "tests" / "data" / "cases"


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def case_incident(case_id: str, config: Config | None = None) -> Incident:
    """The incident of a recorded case, reading its recorded evidence (no Prometheus)."""
    group = parse_alert_group((CASES / case_id / "alert.json").read_text())
    alert = group.alerts[0]
    return Incident(
        runbook="anomalous-traffic",
        alert_name=alert.name,
        labels=alert.labels,
        starts_at=alert.starts_at,
        baseline="7d",
        source=str(CASES / case_id / "evidence"),
        config=config or Config(),
    )


# --- a runbook's own default baseline ---------------------------------------------------------


def test_the_runbook_declares_a_weekly_baseline_and_the_others_keep_the_default() -> None:
    assert read_runbook(NOTEBOOK).baseline == "7d"
    assert read_runbook(ROOT / "notebooks" / "high-latency.ipynb").baseline is None


def test_a_run_uses_the_runbooks_baseline_unless_the_caller_names_one() -> None:
    runbook = read_runbook(NOTEBOOK)
    group = parse_alert_group((CASES / "at-quiet" / "alert.json").read_text())
    chosen = workbook_parameters(runbook, group.alerts, group, source="demo")
    assert chosen["baseline"] == "7d"
    given = workbook_parameters(runbook, group.alerts, group, source="demo", baseline="14d")
    assert given["baseline"] == "14d"
    other = read_runbook(ROOT / "notebooks" / "high-latency.ipynb")
    assert workbook_parameters(other, group.alerts, group, source="demo")["baseline"] == "1d"


def test_opening_a_workbook_at_a_moment_takes_the_runbooks_baseline(tmp_path: Path) -> None:
    config = Config(notebooks=str(ROOT / "notebooks"))
    opened = open_workbook(
        "anomalous-traffic",
        at=CASE_ONSET,
        labels={"service": "svc-at-quiet"},
        source=str(CASES / "at-quiet" / "evidence"),
        folder=tmp_path / "open",
        config=config,
    )
    cells = json.loads(opened.read_text())["cells"]
    (injected,) = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert 'baseline = "7d"' in "".join(injected["source"])


def test_a_baseline_that_is_not_a_duration_is_refused_by_routing_and_lint(tmp_path: Path) -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    notebook["metadata"]["workbooks"]["baseline"] = "weekly"
    broken = tmp_path / "anomalous-traffic.ipynb"
    broken.write_text(json.dumps(notebook))
    with pytest.raises(UnknownRunbookError, match="weekly"):
        read_runbook(broken)
    errors = lint_notebook(broken, catalog=Catalog.load())
    assert [e.rule for e in errors] == ["metadata"]
    assert "baseline" in errors[0].message and "7d" in errors[0].fix
    shutil.copy(NOTEBOOK, broken)
    assert lint_notebook(broken, catalog=Catalog.load()) == []


# --- the weekly scenarios ---------------------------------------------------------------------


def test_the_scenarios_hold_last_week_and_every_day_between() -> None:
    scenario = make_scenario("anomalous-traffic", "none", onset=CASE_ONSET)
    assert scenario.baseline == timedelta(days=7)
    starts = [start for start, _ in scenario.history_windows]
    assert [(starts[-1] - start).days for start in starts] == [7, 6, 5, 4, 3, 2, 1, 0]


def test_the_onsets_weekday_is_the_weekly_peak_of_the_scenario_traffic() -> None:
    scenario = make_scenario("anomalous-traffic", "none", onset=CASE_ONSET, seed=3)
    fleet = scenario.fleet()
    total = sum(client_rates(fleet).values())
    start, end = (moment.timestamp() for moment in scenario.history_windows[-1])

    def days_ago(days: int) -> float:
        inside = (fleet.grid.times >= start - days * 86400) & (
            fleet.grid.times <= end - days * 86400
        )
        return float(total[inside].mean())

    assert days_ago(0) / days_ago(1) == pytest.approx(1.5, rel=0.12)
    assert days_ago(0) / days_ago(7) == pytest.approx(1.0, rel=0.12)


# --- the steps, on recorded evidence ----------------------------------------------------------


def test_a_peak_as_on_the_same_weekday_last_week_is_called_a_weekly_pattern() -> None:
    incident = case_incident("at-quiet")
    rate = incident.query("anomalous_traffic_request_rate")
    days = anomalous_traffic.days_between(incident, "anomalous_traffic_request_rate_days_ago")
    assert sorted(days) == [1, 2, 3, 4, 5, 6]
    ratio = anomalous_traffic.against_last_week(incident, rate, days)
    assert ratio == pytest.approx(1.0, abs=0.2)
    (finding,) = incident.findings
    assert finding.severity == "info"
    assert "the 6 days between: a weekly pattern" in finding.title


def test_new_clients_from_one_country_are_named_with_their_share_of_traffic() -> None:
    incident = case_incident("at-new-country")
    by_country = incident.query("anomalous_traffic_by_country")
    new_clients = incident.query("anomalous_traffic_new_clients_by_country", baseline=False)
    anomalous_traffic.countries(incident, by_country, new_clients)
    (finding,) = incident.findings
    assert finding.subject_values("country") == ["VN"]
    assert finding.cause == "security" and finding.severity == "critical"
    assert finding.title.startswith("12 clients never seen in the week before call from VN")
    assert "nothing from there last week" in finding.title


def test_the_usual_trickle_of_new_clients_names_no_country() -> None:
    incident = case_incident("at-quiet")
    by_country = incident.query("anomalous_traffic_by_country")
    new_clients = incident.query("anomalous_traffic_new_clients_by_country", baseline=False)
    anomalous_traffic.countries(incident, by_country, new_clients)
    assert incident.findings == []


def test_prompt_stuffing_is_told_from_a_flood_by_the_flat_request_rate() -> None:
    incident = case_incident("at-prompt-stuffing")
    by_client = incident.query("anomalous_traffic_by_client")
    per_request = incident.query("anomalous_traffic_tokens_per_request_by_client")
    assert anomalous_traffic.clients(incident, by_client).culprits == ()
    anomalous_traffic.tokens(incident, per_request, by_client)
    (finding,) = incident.findings
    assert finding.subject_values("client_id") == ["umbrella"]
    assert finding.cause == "security"
    flat = re.search(r"umbrella's request rate is ([\d.]+)x its last week", finding.detail or "")
    assert flat is not None and 0.8 <= float(flat.group(1)) <= 1.2, finding.detail


def test_a_team_that_raises_the_client_thresholds_gets_a_milder_finding() -> None:
    strict = case_incident("at-flood-tyrell")
    anomalous_traffic.clients(strict, strict.query("anomalous_traffic_by_client"))
    assert [f.severity for f in strict.findings] == ["warning"]
    relaxed = Config(
        runbooks={
            "anomalous-traffic": RunbookSettings(
                thresholds={"client_change_warning": 3.5, "client_change_critical": 6}
            )
        }
    )
    lenient = case_incident("at-flood-tyrell", relaxed)
    anomalous_traffic.clients(lenient, lenient.query("anomalous_traffic_by_client"))
    assert [f.severity for f in lenient.findings] == ["info"]


# --- a client outside last week's top ---------------------------------------------------------


def _frame(values: dict[str, float], times: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"timestamp": t, "client_id": name, "value": value}
            for name, value in values.items()
            for t in times
        ]
    )


def test_a_client_new_to_the_top_is_compared_with_the_smallest_of_last_weeks_top() -> None:
    times = pd.date_range("2026-11-20 13:00", periods=5, freq="1min")
    result = QueryResult(
        name="by_client",
        title="request rate by client",
        query="topk(2, ...)",
        unit="per_second",
        window=Window(times[0].to_pydatetime(), times[-1].to_pydatetime()),
        step_seconds=60,
        current=_frame({"big": 40.0, "tail": 30.0}, times),
        baseline=_frame({"big": 40.0, "middle": 3.0}, times),
    )
    filled = anomalous_traffic.fill_missing_baseline(result, by="client_id")
    medians = filled.baseline.groupby("client_id")["value"].median().to_dict()
    assert medians == {"big": 40.0, "middle": 3.0, "tail": 3.0}
    assert filled.current is result.current
    empty = QueryResult(
        name="x", title="x", query="x", unit=None, window=result.window, step_seconds=60
    )
    assert anomalous_traffic.fill_missing_baseline(empty, by="client_id") is empty
