"""`workbook test` and `workbooks.synthetic.check`: a runbook's diagnosis on its own cases."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import CASES
from workbooks.core.errors import UnknownRunbookError
from workbooks.synthetic.check import check_runbook, judge, names, select_cases
from workbooks.synthetic.lab import prometheus_available

needs_prometheus = pytest.mark.skipif(
    not prometheus_available(), reason="needs prometheus and promtool"
)


def _case(case_id: str):
    return next(case for case in CASES if case.id == case_id)


def finding(severity: str, title: str, subject: dict, *, likely_cause: bool = False) -> dict:
    return {"severity": severity, "title": title, "subject": subject, "likely_cause": likely_cause}


def test_names_accepts_a_string_a_comma_list_or_a_list() -> None:
    expect = {"model_version": "2.4.0", "instance": ("api-0", "api-1")}
    assert names({"model_version": "2.4.0", "instance": ["api-1", "api-0"]}, expect)
    assert names({"model_version": "2.4.0", "instance": "api-0, api-1, api-3"}, expect)
    assert not names({"model_version": "2.4.0", "instance": "api-0"}, expect)
    assert not names({"instance": ["api-0", "api-1"]}, expect)


def test_judge_a_planted_case() -> None:
    case = _case("lat-innocent-rollout")
    route = finding("critical", "p99 of /v1/chat rose 3x", {"route": "/v1/chat"}, likely_cause=True)
    assert judge(case, [route]) == ""
    assert "not route=/v1/chat" in judge(case, [finding("critical", "x", {"route": "/v1/audio"})])
    blamed = finding("warning", "2.4.0 rolled out", {"model_version": ["2.4.0"]}, likely_cause=True)
    assert "blames" in judge(case, [route, blamed])
    # naming the rollout without blaming it is fine
    assert (
        judge(case, [route, finding("info", "2.4.0 rolled out", {"model_version": "2.4.0"})]) == ""
    )
    assert "only info" in judge(case, [finding("info", "t", {"route": "/v1/chat"})])
    assert judge(case, []) == "the run recorded no findings"


def test_judge_a_quiet_control() -> None:
    case = _case("mem-quiet")
    assert judge(case, [finding("info", "A quiet run: memory is where it was", {})]) == ""
    assert "critical" in judge(case, [finding("critical", "leak", {"instance": "api-1"})])
    assert "not 'A quiet run'" in judge(case, [finding("warning", "hmm", {})])


def test_select_cases_by_id_or_cause_and_say_what_is_known() -> None:
    assert [c.id for c in select_cases("high-latency", "slow_route")] == [
        "lat-vision",
        "lat-chat",
        "lat-embed",
    ]
    assert [c.id for c in select_cases("high-memory", "mem-step")] == ["mem-step"]
    with pytest.raises(UnknownRunbookError, match=r"known: accuracy-drop, .*high-latency, high"):
        select_cases("no-such-runbook")
    with pytest.raises(UnknownRunbookError, match=r"known cases and causes: .*mem-leak-0"):
        select_cases("high-memory", "oom")


@pytest.mark.slow
@pytest.mark.prometheus
@needs_prometheus
def test_check_runbook_runs_each_case_against_one_prometheus(tmp_path: Path) -> None:
    results = check_runbook("high-latency", scenario="slow_route", workdir=tmp_path)
    assert [r.id for r in results] == ["lat-vision", "lat-chat", "lat-embed"]
    for result, route in zip(results, ("/v1/vision", "/v1/chat", "/v1/embed"), strict=True):
        assert result.passed, result
        assert result.status == "succeeded" and result.reason == ""
        assert result.expected == {"route": route}
        assert names(result.top_subject, {"route": route}) and result.top_title
        assert 0 < result.seconds < 120
    # the runs are archived in the workdir, beside Prometheus' data and log
    assert len(list((tmp_path / "archive").glob("*/*/run.json"))) == 3
    assert (tmp_path / "prometheus" / "prometheus.log").is_file()


@pytest.mark.slow
@pytest.mark.prometheus
@needs_prometheus
def test_workbook_test_prints_one_line_per_case(cli, tmp_path: Path) -> None:
    result = cli("test", "high-memory", "--scenario", "leak", "--workdir", str(tmp_path / "w"))
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("PASS  mem-leak-1") and "expected instance=api-1" in lines[0]
    assert "top finding:" in lines[0] and lines[0].endswith(" s)")
    assert "2 passed, 0 failed" in result.stderr
    as_json = cli("test", "high-memory", "--scenario", "mem-leak-0", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    (only,) = as_json.json()
    assert only["id"] == "mem-leak-0" and only["passed"] is True
    assert names(only["top_subject"], {"instance": "api-0"})


def test_workbook_test_refuses_an_unknown_runbook_or_scenario(cli) -> None:
    result = cli("test", "no-such-runbook")
    assert result.exit_code == 2
    assert re.search("known: accuracy-drop, .*high-latency, high-memory", result.stderr)
    result = cli("test", "high-latency", "--scenario", "nope")
    assert result.exit_code == 2
    assert "lat-vision" in result.stderr and "slow_route" in result.stderr


def test_a_case_that_expects_the_wrong_culprit_fails() -> None:
    wrong = replace(_case("lat-vision"), expect={"route": "/v1/audio"})
    top = finding("critical", "p99 of /v1/vision rose 4x", {"route": "/v1/vision"})
    assert judge(wrong, [top]).startswith("the top finding is about")
