"""`workbook open` for real: JupyterLab on a loopback port, Run All Cells in headless Chromium.

The workbook is prepared by ``open_workbook`` from the archived demo run (its parameters, its
saved evidence), JupyterLab is started by ``launch_jupyterlab`` with its own token, and the test
drives the page as an engineer would: Run > Run All Cells, then waits for the charts and the
findings. A screenshot is kept in ``tmp_path`` and copied to ``./test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from workbooks.archive.store import Archive
from workbooks.core.alert import read_alert_group
from workbooks.core.config import Config
from workbooks.running.investigate import launch_jupyterlab, open_workbook, running_server
from workbooks.running.runner import run_alert
from workbooks.synthetic.demo import demo_alert_path

playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _processes_in(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def jupyter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Jupyter's runtime, config and settings in tmp_path: no server or setting of the user's."""
    home = tmp_path / "jupyter"
    for variable, name in (
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
    ):
        (home / name).mkdir(parents=True)
        monkeypatch.setenv(variable, str(home / name))
    # Every cell in the page, not only those scrolled into view, so outputs can be awaited;
    # and the notebook's kernel started without asking (a loaded machine can make it ask).
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none", "autoStartDefaultKernel": true}'
    )
    return home


@pytest.fixture
def lab(tmp_path: Path, jupyter_home: Path) -> Iterator[tuple[str, Path, Archive]]:
    """The demo incident archived, a workbook opened from it, JupyterLab serving it."""
    archive = Archive(tmp_path / "archive")
    [demo] = run_alert(
        read_alert_group(demo_alert_path("high-latency")),
        config=Config(),
        archive=archive,
        source="demo",
        runbook_id="high-latency",
    )
    notebook = open_workbook(
        from_run=demo.run_id,
        folder=tmp_path / "investigation",
        config=Config(archive=str(archive.root)),
        archive=archive,
    )
    url = launch_jupyterlab(
        # port 0: JupyterLab binds any free port itself, so no other process can take it first
        notebook,
        no_browser=True,
        port=0,
        archive_dir=archive.root,
        root_dir=tmp_path,
    )
    server = running_server(notebook)
    assert server is not None and urlsplit(url).hostname == "127.0.0.1"
    assert f"token={server['token']}" in url and len(server["token"]) >= 32
    # A second `workbook open` finds the server instead of starting another.
    assert launch_jupyterlab(notebook, no_browser=True, archive_dir=archive.root) == url
    try:
        yield url, notebook, archive
    finally:
        os.kill(server["pid"], signal.SIGTERM)  # the server shuts its kernels down
        deadline = time.monotonic() + 20
        while _alive(server["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        leftovers = [pid for pid in _processes_in(tmp_path) if _alive(pid)]
        for pid in [server["pid"], *leftovers]:  # never leave a server or kernel behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert leftovers == []


def test_run_all_cells_in_jupyterlab(lab: tuple[str, Path, Archive], tmp_path: Path) -> None:
    url, notebook, archive = lab
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    top = archive.findings(archive.runs()[0])[0].title
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        try:
            _run_all_cells(page, url, top)
        except Exception:
            page.screenshot(path=str(artifacts / "jupyterlab-failure.png"), full_page=True)
            raise
        news = page.get_by_role("button", name="No", exact=True)
        if news.count():  # JupyterLab asks whether to fetch its news; it has no network here
            news.first.click()
        charts = page.locator(".jp-OutputArea-output img")
        charts.nth(1).scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # let the scrolled page settle before the picture
        assert charts.nth(1).is_visible()
        screenshot = artifacts / "jupyterlab-run-all.png"
        page.screenshot(path=str(screenshot))
        browser.close()
    assert screenshot.stat().st_size > 10_000
    kept = ROOT / "test-artifacts"
    kept.mkdir(exist_ok=True)
    shutil.copy(screenshot, kept / screenshot.name)
    assert notebook.is_file()


def _run_all_cells(page: Any, url: str, top_finding: str) -> None:
    """Open the notebook, Run > Run All Cells, and wait until every code cell has run."""
    expect = playwright_api.expect
    # Should JupyterLab still ask which kernel to start, take the notebook's own (the default).
    page.add_locator_handler(
        page.get_by_role("dialog").filter(has_text="Select Kernel"),
        lambda dialog: page.keyboard.press("Enter"),
    )
    page.goto(url)
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    expect(prompts.first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=90_000)
    assert page.locator(".jp-OutputArea-output img").count() == 0  # nothing has run yet
    started = prompts.filter(has_text=re.compile(r"\[(\*|\d+)\]"))
    for attempt in range(3):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        try:
            # A loaded machine can let the first click come before the kernel is attached.
            expect(started.first).to_be_visible(timeout=20_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    not_run = prompts.filter(has_not_text=re.compile(r"\[\d+\]"))
    expect(not_run).to_have_count(0, timeout=120_000)
    expect(page.get_by_text(top_finding).first).to_be_visible()
    assert page.locator(".jp-OutputArea-output img").count() >= 5
    stderr = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    assert page.locator(stderr).count() == 0
