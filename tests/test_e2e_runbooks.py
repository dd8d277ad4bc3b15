"""End to end: a real Prometheus with a planted incident, `workbook run`, the archived artifact.

Each case (declared in its runbook's scenario module) plants a cause the workbook has never
seen and asserts that the top finding's `subject` names it, and that no likely-cause finding
blames a change that was not the cause; a quiet control (the alert fired, nothing changed) must
give no critical finding. One case per runbook runs here, live, and its evidence must equal the
case's recording; every case is checked on its recording in test_replay_cases.py. Replaying
the archived evidence, with no Prometheus, gives the same findings.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import CASES, CASES_DIR, LIVE_CASES, ROOT, Case, assert_same_evidence
from workbooks.core.findings import findings_from_notebook, ranked
from workbooks.synthetic.check import judge, names

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


@pytest.mark.parametrize("case", LIVE_CASES, ids=[case.id for case in LIVE_CASES])
def test_top_finding_names_the_planted_cause(case: Case, prometheus, cli, tmp_path: Path) -> None:
    """One case per runbook, live: its queries on a real Prometheus name the planted cause, and
    what Prometheus answers is the case's recording (every case is replayed from it)."""
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(case.scenario.alert_payload()))
    result = cli(
        "run",
        case.scenario.runbook,
        "--alert",
        str(alert),
        "--prometheus",
        prometheus.url,
        "--json",
        env={"WORKBOOKS_NOW": case.scenario.end.isoformat()},
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["runbook"] == case.scenario.runbook
    assert report["status"] == "succeeded"
    findings = report["findings"]
    assert findings, "a run always records findings"
    # The verdict `workbook test` gives: the top finding names the expected labels (a value may
    # be a list), no likely-cause finding names a change that was not the cause, and a quiet
    # control has no critical finding and says so.
    problem = judge(case, findings)
    assert not problem, f"{case.id}: {problem}; findings: {[f['title'] for f in findings]}"
    if case.expect:
        assert names(findings[0]["subject"], case.expect)
        assert findings[0]["severity"] in ("critical", "warning")
    else:
        assert not [f for f in findings if f["severity"] == "critical"], findings
        assert findings[0]["title"].startswith("A quiet run"), findings[0]
    assert_same_evidence(Path(report["path"]) / "evidence", CASES_DIR / case.id / "evidence")


def test_replay_from_archived_evidence_gives_the_same_findings(prometheus, cli, tmp_path):
    case = next(c for c in CASES if c.id == "lat-version")
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(case.scenario.alert_payload()))
    live = cli(
        "run",
        "high-latency",
        "--alert",
        str(alert),
        "--prometheus",
        prometheus.url,
        "--json",
        env={"WORKBOOKS_NOW": case.scenario.end.isoformat()},
    )
    assert live.exit_code == 0, live.stderr
    original = live.json()
    replayed = cli("replay", original["incident_id"], "--json")
    assert replayed.exit_code == 0, replayed.stderr
    again = replayed.json()
    assert again["incident_id"] == original["incident_id"]
    assert again["findings"] == original["findings"]
    records = [json.loads(p.read_text()) for p in cli.archive.glob("*/*/run.json")]
    sources = sorted(record["source"] for record in records)
    assert len(records) == 2
    assert sources[0].endswith("evidence"), sources  # the replay read saved evidence only
    assert sources[1] == prometheus.url


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers nothing for longer than the client waits: a Prometheus stuck on a query."""

    def do_GET(self) -> None:
        time.sleep(3)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["dead", "slow"])
def test_unreachable_prometheus_still_archives_a_run_that_says_so(
    kind: str, slow_server: str, cli, tmp_path: Path
) -> None:
    case = next(c for c in CASES if c.id == "lat-vision")
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(case.scenario.alert_payload()))
    url = "http://127.0.0.1:1" if kind == "dead" else slow_server
    started = time.monotonic()
    result = cli(
        "run",
        "high-latency",
        "--alert",
        str(alert),
        "--prometheus",
        url,
        "--json",
        env={"WORKBOOKS_PROMETHEUS_TIMEOUT": "1"},
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["status"] == "succeeded"
    top = report["findings"][0]
    assert top["severity"] == "critical"
    assert "unreachable" in top["title"] and url in top["detail"]
    unreachable = [f for f in report["findings"] if "unreachable" in f["title"]]
    assert len(unreachable) == 1, "said once, not once per query"
    # The source is given up after its first failure, not waited on for every query.
    assert elapsed < 60
    assert len(list(cli.archive.glob("*/*/workbook.ipynb"))) == 1


def test_plain_papermill_with_p_and_y_parameters(prometheus, tmp_path: Path) -> None:
    """Papermill users run a runbook as they run any notebook: -p for strings, -y for the rest."""
    case = next(c for c in CASES if c.id == "mem-leak-0")
    alert = case.scenario.alert_payload()["alerts"][0]
    output = tmp_path / "out.ipynb"
    environment = {
        **os.environ,
        "WORKBOOKS_NOW": case.scenario.end.isoformat(),
        "WORKBOOKS_EVIDENCE_DIR": str(tmp_path / "evidence"),
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "--no-progress-bar",
            str(ROOT / "notebooks" / "high-memory.ipynb"),
            str(output),
            "-p",
            "source",
            prometheus.url,
            "-p",
            "starts_at",
            alert["startsAt"],
            "-y",
            json.dumps({"labels": alert["labels"], "fingerprints": [alert["fingerprint"]]}),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    findings = ranked(findings_from_notebook(json.loads(output.read_text())))
    assert names(findings[0].subject, {"instance": "api-0"}), findings[0]
    assert (tmp_path / "evidence" / "manifest.json").is_file()


RUNBOOKS_WITH_CASES = sorted({case.scenario.runbook for case in CASES})


@pytest.mark.parametrize("runbook", RUNBOOKS_WITH_CASES)
def test_every_runbook_runs_with_a_baseline_a_week_back(
    runbook: str, prometheus, cli, tmp_path: Path
) -> None:
    # The shared Prometheus holds each case's two windows only: a week back there is nothing,
    # and the workbook must say so in findings, not fail.
    case = next(case for case in CASES if case.scenario.runbook == runbook and case.expect)
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(case.scenario.alert_payload()))
    result = cli(
        *("run", runbook, "--alert", str(alert), "--prometheus", prometheus.url),
        *("--baseline", "7d", "--json"),
        env={"WORKBOOKS_NOW": case.scenario.end.isoformat()},
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["status"], report["baseline"]) == ("succeeded", "7d"), report["error"]
    assert report["findings"], "a run always records findings"
