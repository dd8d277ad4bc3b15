"""Incident reports rendered by nbconvert from real archived runs: one succeeded, one failed."""

from __future__ import annotations

import html
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from workbooks.archive.report import (
    REPORT_FILES,
    ReportCache,
    describe_source,
    markdown_text,
    render_report,
)
from workbooks.archive.store import Archive, RunRecord
from workbooks.core.alert import parse_alert_group, read_alert_group
from workbooks.core.config import Config
from workbooks.running.runner import run_alert
from workbooks.synthetic.demo import demo_alert_path

RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"
XSS = "<script>alert(1)</script>"
ANNOTATION = "<img src=x onerror=alert(2)> & more"


def failing_alert() -> dict[str, Any]:
    """Routes to tiny-broken, whose last cell raises; its labels try to inject markup."""
    return {
        "version": "4",
        "status": "firing",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": XSS, "severity": "critical"},
                "annotations": {"summary": ANNOTATION},
                "startsAt": "2026-11-22T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "f00d",
            }
        ],
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, RunRecord, RunRecord]:
    """The high-latency demo (succeeded) and a tiny runbook that raises (failed), archived."""
    folder = tmp_path_factory.mktemp("report")
    archive = Archive(folder / "archive")
    [succeeded] = run_alert(
        read_alert_group(demo_alert_path("high-latency")),
        config=Config(),
        archive=archive,
        source="demo",
        runbook_id="high-latency",
    )
    (folder / "evidence").mkdir()
    [failed] = run_alert(
        parse_alert_group(failing_alert()),
        config=Config(notebooks=str(RUNBOOKS)),
        archive=archive,
        source=str(folder / "evidence"),
    )
    assert (succeeded.status, failed.status) == ("succeeded", "failed")
    return archive, succeeded, failed


def test_html_report_of_a_succeeded_run(runs: tuple[Archive, RunRecord, RunRecord]) -> None:
    archive, run, _ = runs
    started = time.perf_counter()
    path = render_report(archive, run.run_id)
    elapsed = time.perf_counter() - started
    assert path == run.path / "report.html"
    page = path.read_text(encoding="utf-8")
    print(f"report.html of the demo run: {elapsed:.2f} s, {len(page) / 1024:.0f} KiB")
    assert elapsed < 20
    # Standalone: no script at all, nothing from the network, a policy that says so.
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'src="(https?:)?//', page)
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page
    # The summary of findings comes first, worst first, then the sections with their charts.
    findings = archive.findings(run)
    top = next(f for f in findings if f.likely_cause and f.severity == "critical")
    summary_at = page.index("Summary of findings")
    assert summary_at < page.index(_html(top.title)) < page.index('id="workbook"')
    assert page.index('id="workbook"') < page.index('<img alt="chart" src="data:image/png')
    assert page.count('<img alt="chart" src="data:image/png;base64,') >= 5
    for heading in ("1. Alert description", "2. Immediate actions", "3. Investigation"):
        assert page.index('id="workbook"') < page.index(heading)
    # Code is folded away, one click from sight: every code cell's input is in <details>.
    notebook = json.loads((run.path / "workbook.ipynb").read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert page.count('<details class="wb-code">') == len(code_cells)
    assert "<summary>code</summary>" in page and "<summary>parameters</summary>" in page
    folded = re.findall(r'<details class="wb-code">.*?</details>', page, flags=re.S)
    assert any("incident.query(" in _text(block) for block in folded)
    outside = re.sub(r'<details class="wb-code">.*?</details>', "", page, flags=re.S)
    assert "incident.query(" not in _text(outside)
    # The alert's labels and timing, the status, and where the data came from and when.
    assert "Run succeeded" in page and 'class="wb-status wb-status-failed"' not in page
    assert "inference-api" in page and "2026-11-20 14:10:00 UTC" in page
    assert "bundled demo incident" in page and "2026-11-20 12:10:00 UTC to" in page
    assert f"high-latency (version {run.runbook_hash})" in page
    # The notebook's own Summary cell is not repeated under the report's summary.
    assert "The findings below are those recorded" not in page


def test_html_report_of_a_failed_run(runs: tuple[Archive, RunRecord, RunRecord]) -> None:
    archive, _, run = runs
    page = render_report(archive, run.run_id).read_text(encoding="utf-8")
    status = re.search(r'<div class="wb-status wb-status-failed".*?</div>', page, flags=re.S)
    assert status is not None
    assert "Run failed (exception)" in status.group(0)
    assert "RuntimeError: runbook bug while investigating HighErrorRate" in status.group(0)
    # The finding recorded before the failure, and the traceback, in plain sight.
    assert page.index("error rate rising") < page.index('id="workbook"')
    outside = re.sub(r'<details class="wb-code">.*?</details>', "", page, flags=re.S)
    assert "Traceback" in _text(outside) and "runbook bug while investigating" in _text(outside)
    # Labels and annotations from outside are text, never markup.
    assert XSS not in page and "<img src=x" not in page
    assert _html(XSS) in page and _html("<img src=x onerror=alert(2)>") in page
    assert "<script" not in page


def test_markdown_report_with_its_charts(runs: tuple[Archive, RunRecord, RunRecord]) -> None:
    archive, run, failed = runs
    path = render_report(archive, run.run_id, format="md")
    assert path == run.path / "report.md"
    text = path.read_text(encoding="utf-8")
    charts = re.findall(r"!\[chart\]\((report_files/[^)]+\.png)\)", text)
    assert len(charts) >= 5
    for chart in charts:
        assert (run.path / chart).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in (run.path / REPORT_FILES).iterdir()) == sorted(
        Path(c).name for c in charts
    )
    assert text.startswith("# Incident report: HighLatency on inference-api")
    assert text.index("## Summary of findings") < text.index("## The workbook")
    assert text.index("## The workbook") < text.index("## 1. Alert description")
    assert "incident.query(" not in text and "```python" not in text  # no code
    assert "| Data from | saved evidence: the bundled demo incident" in text

    failed_text = render_report(archive, failed.run_id, format="md").read_text()
    assert "**⛔ Run failed (exception):**" in failed_text
    assert "<script>" not in failed_text and "&lt;script&gt;alert(1)&lt;/script&gt;" in failed_text


def test_notes_and_resolution_reach_the_cached_report(
    runs: tuple[Archive, RunRecord, RunRecord],
) -> None:
    archive, run, _ = runs
    (run.path / "report.html").unlink(missing_ok=True)
    cache = ReportCache()
    page = cache.page(archive, run)
    assert isinstance(page, str)
    assert cache.page(archive, run) is page  # unchanged: not rendered again
    assert not (run.path / "report.html").exists()  # a page view writes nothing
    time.sleep(0.01)
    archive.add_note(run.incident_id, "rolled back model 2.4.0 <b>now</b>", author="ana")
    assert archive.mark_resolved(run.incident_id, datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    again = cache.page(archive, run)
    assert again is not page
    assert "rolled back model 2.4.0 &lt;b&gt;now&lt;/b&gt;" in again and "ana" in again
    assert "resolved at 2026-11-20 15:00:00 UTC (after 50 min)" in again
    written = render_report(archive, run.run_id)  # `workbook report` writes it: served as is
    assert cache.page(archive, run) == written


def test_where_the_data_came_from(tmp_path: Path) -> None:
    base = {
        "incident_id": "x",
        "runbook": "high-latency",
        "runbook_hash": "h",
        "status": "succeeded",
        "started_at": datetime(2026, 11, 28, 14, 5, tzinfo=UTC),
        "finished_at": datetime(2026, 11, 28, 14, 6, tzinfo=UTC),
        "duration_seconds": 60.0,
        "alert_name": "HighLatency",
        "severity": "critical",
        "alert_status": "firing",
        "path": tmp_path,
    }
    live = describe_source(RunRecord(**base, source="http://prometheus:9090"))
    assert live["kind"] == "live" and "live Prometheus at http://prometheus:9090" in live["label"]
    assert "2026-11-28 14:05:00 UTC" in live["when"]
    replayed = describe_source(RunRecord(**base, source="/archive/inc/20261101T000000Z-x/evidence"))
    assert replayed["kind"] == "evidence" and "by run 20261101T000000Z-x" in replayed["when"]
    assert describe_source(RunRecord(**base, source="demo"))["kind"] == "demo"


def test_markdown_text_is_inert() -> None:
    assert markdown_text("a|b *c* [d](e) <x>\nnext") == r"a\|b \*c\* \[d\](e) &lt;x&gt; next"
    assert os.linesep not in markdown_text("one\r\ntwo")


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
