"""The archive's pages, served by uvicorn on a loopback port and driven in headless Chromium."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from workbooks.archive.store import Archive, RunRecord
from workbooks.core.alert import parse_alert_group, read_alert_group
from workbooks.core.config import Config
from workbooks.running.runner import run_alert
from workbooks.synthetic.demo import demo_alert_path

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]
RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"
XSS = "<script>alert(1)</script>"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alert(name: str, labels: dict[str, str], starts: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "groupKey": "{}:" + json.dumps(labels, sort_keys=True),
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, **labels},
                "annotations": {"summary": "<img src=x onerror=alert(2)>"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Three incidents: the high-latency demo (with a note), a label that tries XSS, a failure."""
    folder = tmp_path_factory.mktemp("web")
    archive = Archive(folder / "archive")
    [demo] = run_alert(
        read_alert_group(demo_alert_path("high-latency")),
        config=Config(),
        archive=archive,
        source="demo",
        runbook_id="high-latency",
    )
    archive.add_note(demo.incident_id, "rolled back model 2.4.0 on api-1 and api-3", author="ana")
    (folder / "evidence").mkdir()
    tiny = Config(notebooks=str(RUNBOOKS))
    for name, labels, starts in (
        ("HighLatency", {"service": XSS, "severity": "warning"}, "2026-11-21T10:00:00Z"),
        ("HighErrorRate", {"service": "payments", "severity": "critical"}, "2026-11-22T10:00:00Z"),
    ):
        group = parse_alert_group(alert(name, labels, starts))
        run_alert(group, config=tiny, archive=archive, source=str(folder / "evidence"))
    return archive


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on a free loopback port, by uvicorn in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(archive: Archive) -> Iterator[str]:
    """The app mounted under /archive of another app, as `workbook serve` mounts it."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from workbooks.archive.web import create_app

    with serving(Starlette(routes=[Mount("/archive", app=create_app(archive))])) as url:
        yield f"{url}/archive"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records every dialog (an alert() would be an XSS)."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.set_default_timeout(15_000)
    yield page
    assert page.dialogs == [], f"a dialog fired: {page.dialogs}"
    context.close()


def navigate(page: Any, selector: str) -> None:
    """Click what leads to another page, and wait until that page has loaded."""
    with page.expect_navigation():
        page.click(selector)


def rows(page: Any) -> list[str]:
    return page.locator("tr.incident").all_inner_texts()


def test_incidents_newest_first_and_filters(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/")
    listed = rows(page)
    assert [row.split("\n")[0].strip()[:10] for row in listed] == [
        "2026-11-22",
        "2026-11-21",
        "2026-11-20",
    ]
    page.select_option("select[name=runbook]", "high-latency")
    navigate(page, "button[type=submit]")
    assert "runbook=high-latency" in page.url
    assert len(rows(page)) == 1 and "inference-api" in rows(page)[0]
    page.goto(f"{base_url}/")
    page.select_option("select[name=status]", "failed")
    navigate(page, "button[type=submit]")
    assert len(rows(page)) == 1 and "RUN FAILED" in rows(page)[0].upper()
    page.goto(f"{base_url}/?severity=critical")
    assert len(rows(page)) == 2
    page.goto(f"{base_url}/")
    page.fill("input[name=since]", "2026-11-21")
    page.fill("input[name=until]", "2026-11-21")
    navigate(page, "button[type=submit]")
    assert len(rows(page)) == 1 and "tiny-latency" in rows(page)[0]
    response = page.goto(f"{base_url}/?since=yesterday")
    assert response.status == 400
    expect(page.locator(".problem")).to_be_visible()


def test_search_finds_the_demo_incident_by_a_label_value(page: Any, base_url: str) -> None:
    page.goto(f"{base_url}/")
    page.fill("input[name=q]", "inference-api")
    navigate(page, "button[type=submit]")
    [row] = rows(page)
    assert "service=inference-api" in row and "HighLatency" in row
    for query, expected in (("slowdown follows", 1), ("rolled back", 1), ("payments", 1)):
        page.goto(f"{base_url}/?q={query.replace(' ', '+')}")
        assert len(rows(page)) == expected, query
    page.goto(f"{base_url}/?q=nothing-like-this")
    assert rows(page) == []
    expect(page.get_by_text("No incident matches")).to_be_visible()


def test_an_incident_timeline_links_its_report_notebook_and_evidence(
    page: Any, base_url: str, archive: Archive, tmp_path: Path
) -> None:
    demo = archive.incidents(service="inference-api")[0]
    page.goto(f"{base_url}/?q=inference-api")
    navigate(page, f"a[href$='/incidents/{demo.incident_id}']")
    timeline = page.locator("ol.timeline > li")
    kinds = [timeline.nth(i).get_attribute("class") for i in range(timeline.count())]
    assert kinds == ["fired", "run", "note"]
    expect(page.get_by_text("rolled back model 2.4.0 on api-1 and api-3")).to_be_visible()

    with page.expect_download() as download:
        page.click("text=notebook (.ipynb)")
    saved = tmp_path / "downloaded.ipynb"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"{demo.last_run.run_id}.ipynb"
    assert json.loads(saved.read_text())["metadata"]["workbooks"]["runbook"] == "high-latency"

    navigate(page, "text=evidence")
    expect(page.locator("#evidence").get_by_text("manifest.json")).to_be_visible()
    navigate(page, "text=manifest.json")
    assert "entries" in json.loads(page.locator("body").inner_text())

    page.goto(f"{base_url}/incidents/{demo.incident_id}")
    navigate(page, "text=report")
    expect(
        page.get_by_role("heading", name="Summary of findings", exact=True).first
    ).to_be_visible()
    charts = page.locator("img[alt=chart]")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 5
    expect(page.locator("details.wb-code").first).to_be_visible()
    expect(page.locator("details.wb-code pre").first).to_be_hidden()  # folded
    page.locator("details.wb-code > summary").nth(2).click()
    expect(page.locator("details.wb-code").nth(2).locator("pre").first).to_be_visible()
    assert not (demo.last_run.path / "report.html").exists()  # a page view writes nothing


def test_labels_and_findings_stay_text(page: Any, base_url: str, archive: Archive) -> None:
    page.goto(f"{base_url}/")
    expect(page.get_by_text(f"service={XSS}")).to_be_visible()
    assert page.evaluate("document.scripts.length") == 0
    [xss] = archive.incidents(search="tiny-latency")
    page.goto(f"{base_url}/incidents/{xss.incident_id}")
    assert page.locator("h1").inner_text().startswith(f"HighLatency on {XSS}")
    navigate(page, "text=report")
    expect(page.locator(".wb-label-value", has_text=XSS)).to_be_visible()
    expect(page.get_by_role("cell", name="<img src=x onerror=alert(2)>")).to_be_visible()
    assert page.evaluate("document.scripts.length") == 0
    page.wait_for_timeout(300)  # an injected handler would have fired by now


def test_paths_from_urls_are_checked(page: Any, base_url: str, archive: Archive) -> None:
    run: RunRecord = archive.incidents(service="inference-api")[0].last_run
    outside = run.path / "evidence" / "leak.json"
    outside.symlink_to(run.path / "run.json")
    try:
        for path in (
            f"/runs/{run.run_id}/evidence/..%2F..%2Frun.json",
            f"/runs/{run.run_id}/evidence/%2E%2E/run.json",
            f"/runs/{run.run_id}/evidence/.hidden",
            f"/runs/{run.run_id}/evidence/leak.json",
            f"/runs/{run.incident_id}/report",  # an incident id is not a run id
            "/runs/..%2F..%2Fetc/workbook.ipynb",
            "/incidents/..%2F..",
            "/incidents/nope",
        ):
            response = page.request.get(f"{base_url}{path}")
            assert response.status == 404, path
        page.goto(f"{base_url}/runs/{run.run_id}/evidence/")
        assert page.locator("#evidence").get_by_text("leak.json").count() == 0
    finally:
        outside.unlink()
    headers = page.request.get(f"{base_url}/").headers
    assert "script-src" not in headers["content-security-policy"]
    assert headers["content-security-policy"].startswith("default-src 'none'")
    report = page.request.get(f"{base_url}/runs/{run.run_id}/report").headers
    assert (
        report["content-security-policy"]
        == "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )


def test_page_response_times(page: Any, base_url: str, archive: Archive) -> None:
    run = archive.runs(runbook="high-latency")[0]
    (run.path / "report.html").unlink(missing_ok=True)
    notebook = run.path / "workbook.ipynb"
    later = notebook.stat().st_mtime + 60
    os.utime(notebook, (later, later))  # changed since any earlier view: rendered again
    timings = {}
    for name, path in (
        ("list", "/"),
        ("search", "/?q=inference-api"),
        ("filter", "/?runbook=high-latency&status=firing"),
        ("incident", f"/incidents/{run.incident_id}"),
        ("report (rendered)", f"/runs/{run.run_id}/report"),
        ("report (cached)", f"/runs/{run.run_id}/report"),
        ("evidence", f"/runs/{run.run_id}/evidence/"),
    ):
        started = time.perf_counter()
        response = page.request.get(f"{base_url}{path}")
        timings[name] = time.perf_counter() - started
        assert response.ok, path
    print(
        "\n" + "\n".join(f"{name:18} {seconds * 1000:7.1f} ms" for name, seconds in timings.items())
    )
    # Generous bounds (a loaded CI machine is slow); the printed numbers are the measurement.
    assert timings["report (cached)"] < timings["report (rendered)"]
    assert max(timings.values()) < 5.0


def test_links_work_without_a_mount(page: Any, archive: Archive) -> None:
    from workbooks.archive.web import create_app

    incident = archive.incidents()[0].incident_id
    with serving(create_app(archive)) as url:
        page.goto(f"{url}/")
        navigate(page, f"a[href='/incidents/{incident}']")
        assert page.url == f"{url}/incidents/{incident}"
        navigate(page, "text=Incidents")
        assert page.url == f"{url}/"
