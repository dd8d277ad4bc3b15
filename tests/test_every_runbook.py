"""Every shipped runbook, the whole way an on-call engineer meets it.

Its bundled demo alert is posted to a real `workbook serve` (uvicorn, its queue and workers), which
routes it by alertname and runs the workbook on the demo evidence; the archived run then gives a
post-mortem report and opens in a real JupyterLab (its contents API reads the prepared notebook
back, parameters and kernel included). The runbooks' own judgement is tested by their planted
cases (test_e2e_runbooks.py), and replay by every case's recorded evidence
(test_replay_cases.py); this file checks that none of the runbooks is left out of the paths
around them.
"""

from __future__ import annotations

import html
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from conftest import run_cli
from test_service import ServiceThread, service_config, wait_for
from workbooks.archive.store import Archive, RunRecord
from workbooks.core.config import Config
from workbooks.core.paths import demo_dir
from workbooks.running.investigate import launch_jupyterlab, open_workbook, running_server
from workbooks.service.app import Service

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHIPPED = sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, dict[str, RunRecord]]:
    """Each runbook's demo alert through `workbook serve`, every run archived."""
    folder = tmp_path_factory.mktemp("served")
    config = service_config(folder / "archive").model_copy(update={"notebooks": str(NOTEBOOKS)})
    service = Service(config=config, archive_dir=folder / "archive", source="demo", workers=2)
    with ServiceThread(service) as running:
        for runbook in SHIPPED:
            payload = json.loads((demo_dir(runbook) / "alert.json").read_text(encoding="utf-8"))
            response = running.post(payload)
            assert response.status_code == 202, (runbook, response.text)
        wait_for(lambda: len(service.archive.runs()) >= len(SHIPPED), 900, "every demo run")
    runs = {run.runbook: run for run in service.archive.runs()}
    return service.archive, runs


@pytest.mark.parametrize("runbook", SHIPPED)
def test_the_demo_alert_routes_and_runs_from_serve(
    served: tuple[Archive, dict[str, RunRecord]], runbook: str
) -> None:
    archive, runs = served
    run = runs.get(runbook)
    assert run is not None, f"no archived run of {runbook}: {sorted(runs)}"
    assert run.status == "succeeded", run.error
    findings = archive.findings(run)
    assert findings, "a run always records findings"
    assert not findings[0].title.startswith("no data"), findings[0].title


@pytest.mark.parametrize("runbook", SHIPPED)
def test_the_archived_run_gives_its_report(
    served: tuple[Archive, dict[str, RunRecord]], runbook: str
) -> None:
    archive, runs = served
    run = runs[runbook]

    report = run_cli("report", run.run_id, archive=archive.root)
    assert report.exit_code == 0, report.stderr
    page = Path(report.stdout.strip()).read_text(encoding="utf-8")
    top = archive.findings(run)[0].title
    assert run.run_id in page and html.escape(top, quote=False) in page


@pytest.fixture(scope="module")
def lab(
    served: tuple[Archive, dict[str, RunRecord]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """One real JupyterLab on a loopback port serving a folder of opened workbooks."""
    archive, _ = served
    root = tmp_path_factory.mktemp("lab")
    saved = {name: os.environ.get(name) for name in ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR")}
    for name in saved:
        (root / name).mkdir()
        os.environ[name] = str(root / name)
    first = _open(archive, SHIPPED[0], root)
    url = launch_jupyterlab(first, no_browser=True, port=0, archive_dir=archive.root, root_dir=root)
    server = running_server(first)
    assert server is not None
    try:
        yield url.split("/lab")[0], server["token"], root
    finally:
        os.kill(server["pid"], signal.SIGTERM)  # the server shuts its kernels down
        deadline = time.monotonic() + 20
        while Path(f"/proc/{server['pid']}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _open(archive: Archive, runbook: str, root: Path) -> Path:
    run = next(run for run in archive.runs() if run.runbook == runbook)
    return open_workbook(
        from_run=run.run_id,
        folder=root / runbook,
        config=Config(archive=str(archive.root)),
        archive=archive,
    )


@pytest.mark.parametrize("runbook", SHIPPED)
def test_the_archived_run_opens_in_jupyterlab(
    served: tuple[Archive, dict[str, RunRecord]], lab: tuple[str, str, Path], runbook: str
) -> None:
    archive, runs = served
    base, token, root = lab
    notebook = _open(archive, runbook, root)

    response = requests.get(
        f"{base}/api/contents/{notebook.relative_to(root).as_posix()}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    model = response.json()
    assert model["type"] == "notebook" and not model.get("message")  # no validation complaint
    cells = model["content"]["cells"]
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, "the alert's parameters are in the notebook"
    assert runs[runbook].incident_id in injected[0]["source"]
    assert model["content"]["metadata"]["kernelspec"]["name"]
