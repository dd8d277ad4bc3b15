"""The runner, on tiny one-behaviour notebooks run by a real kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest

from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config
from workbooks.core.errors import (
    ArchiveError,
    ConfigError,
    RunFailedError,
    UnknownRunbookError,
)
from workbooks.core.findings import Finding
from workbooks.running.execution import ERROR_TAG, Execution, execute_notebook, fill_summary
from workbooks.running.parameters import PARAMETER_NAMES
from workbooks.running.routing import load_runbooks
from workbooks.running.runner import replay, run_alert, workbook_parameters
from workbooks.synthetic.cgroup import MemoryCgroup

NOTEBOOKS = Path(__file__).parent / "notebooks"
RUNBOOKS = NOTEBOOKS / "runbooks"


def alert(name: str, **labels: str) -> dict[str, Any]:
    return {
        "status": labels.pop("status", "firing"),
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} is firing"},
        "startsAt": labels.pop("starts", "2026-11-28T14:05:00Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"fp-{name.lower()}",
    }


def payload(*alerts: dict[str, Any], group_key: str = '{}:{alertname="HighLatency"}') -> dict:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "workbooks",
        "groupKey": group_key,
        "alerts": list(alerts),
    }


def run(name: str, tmp_path: Path, parameters: dict | None = None, **kwargs: Any) -> Execution:
    kwargs.setdefault("cell_timeout", 20)
    kwargs.setdefault("run_timeout", 60)
    return execute_notebook(
        NOTEBOOKS / name, tmp_path / "out.ipynb", parameters or {}, cwd=tmp_path, **kwargs
    )


def run_cells(path: Path) -> list[nbformat.NotebookNode]:
    notebook = nbformat.read(str(path), as_version=4)
    return [cell for cell in notebook.cells if not _banner(cell)]


def _banner(cell: nbformat.NotebookNode) -> bool:
    tags = set(cell.metadata.get("tags", []))
    return bool(tags & {ERROR_TAG, "papermill-error-cell-tag"})


# -- execute_notebook: one behaviour per notebook ------------------------------------------------


def test_success_runs_in_cwd_without_moving_ours(tmp_path: Path) -> None:
    before = os.getcwd()
    execution = run("succeeds.ipynb", tmp_path, {"greeting": "hi 'there' $(x)"})
    assert os.getcwd() == before
    assert execution.status == "succeeded" and execution.error is None
    assert execution.finished_at > execution.started_at
    execution.raise_for_status()
    assert (tmp_path / "evidence" / "greeting.txt").read_text() == "hi 'there' $(x)"
    assert "injected-parameters" in (tmp_path / "out.ipynb").read_text()


def test_a_run_starts_no_heartbeat_thread(tmp_path: Path) -> None:
    """A run's client asks the kernel manager whether the kernel lives (test_dead_kernel), so
    it starts no heartbeat thread, whose start races with a quick run's stop in
    jupyter_client 8.10 (the thread then opens sockets until "Too many open files")."""
    from jupyter_client.channels import HBChannel

    seen: list[threading.Thread] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(t for t in threading.enumerate() if isinstance(t, HBChannel))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        execution = run("succeeds.ipynb", tmp_path, {"greeting": "hi"})
    finally:
        done.set()
        watcher.join()
    assert execution.status == "succeeded"
    assert not seen


def test_raising_cell_is_an_exception_with_its_cell(tmp_path: Path) -> None:
    execution = run("raises.ipynb", tmp_path)
    assert execution.status == "failed"
    error = execution.error
    assert error is not None
    assert (error["kind"], error["ename"], error["evalue"]) == (
        "exception",
        "ZeroDivisionError",
        "division by zero",
    )
    assert "1 / divisor" in run_cells(tmp_path / "out.ipynb")[error["cell_index"]].source
    notebook = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert notebook.metadata.papermill.exception is True
    with pytest.raises(RunFailedError, match="ZeroDivisionError") as raised:
        execution.raise_for_status()
    assert type(raised.value.__cause__).__name__ == "PapermillExecutionError"


def test_cell_timeout_is_marked_although_papermill_does_not(tmp_path: Path) -> None:
    execution = run("slow_cell.ipynb", tmp_path, cell_timeout=1)
    error = execution.error
    assert error is not None and error["kind"] == "cell-timeout"
    notebook = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert notebook.metadata.papermill.exception is True
    banner = notebook.cells[0]
    assert ERROR_TAG in banner.metadata.tags
    assert f"cell {error['cell_index']}" in banner.source and "after 1 s" in banner.source
    cells = run_cells(tmp_path / "out.ipynb")
    assert "time.sleep" in cells[error["cell_index"]].source
    assert cells[error["cell_index"]].metadata.papermill.exception is True
    assert cells[-1].outputs == [] and cells[-1].metadata.papermill.status == "pending"


def test_run_timeout_stops_a_run_of_short_cells(tmp_path: Path) -> None:
    # Eight cells of 0.5 s outlast the 2 s deadline: the run is stopped in the middle, and the
    # cells after the interrupted one never ran (no wall-clock bound: it flaked under load).
    execution = run("slow_run.ipynb", tmp_path, cell_timeout=5, run_timeout=2)
    error = execution.error
    assert error is not None and error["kind"] == "run-timeout", error
    cells = run_cells(tmp_path / "out.ipynb")
    assert error["cell_index"] < len(cells) - 1, "the run finished: it was not stopped"
    assert "time.sleep" in cells[error["cell_index"]].source
    assert not any(cell.get("outputs") for cell in cells[error["cell_index"] + 1 :])
    assert "run timeout" in nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells[0].source


def test_run_timeout_kills_a_cell_that_ignores_interrupts(tmp_path: Path) -> None:
    started = time.monotonic()
    execution = run("ignores_interrupt.ipynb", tmp_path, cell_timeout=30, run_timeout=1.5)
    elapsed = time.monotonic() - started
    assert execution.error is not None and execution.error["kind"] == "run-timeout"
    # Deadline, interrupt grace, then nbclient notices the kill: far below the 30 s the cell
    # would take otherwise (loose, so a loaded machine does not fail it).
    assert elapsed < 15


def test_dead_kernel(tmp_path: Path) -> None:
    execution = run("kernel_dies.ipynb", tmp_path)
    error = execution.error
    assert error is not None and error["kind"] == "dead-kernel"
    assert "os._exit" in run_cells(tmp_path / "out.ipynb")[error["cell_index"]].source
    assert "before" in (tmp_path / "out.ipynb").read_text()  # what ran is kept
    assert "its process exited with status 1" in error["message"]


def test_a_kernel_killed_by_a_signal_is_named(tmp_path: Path) -> None:
    execution = run("kernel_dies.ipynb", tmp_path, parameters={"signal_number": 15})
    error = execution.error
    assert error is not None and error["kind"] == "dead-kernel"
    assert "killed by SIGTERM" in error["message"], error["message"]
    assert "out-of-memory" not in error["message"]


def test_a_kernel_killed_by_sigkill_points_at_the_memory(tmp_path: Path) -> None:
    execution = run("kernel_dies.ipynb", tmp_path, parameters={"signal_number": 9})
    error = execution.error
    assert error is not None and error["kind"] == "dead-kernel"
    assert "killed by SIGKILL: most often the out-of-memory killer" in error["message"]
    assert "before" in (tmp_path / "out.ipynb").read_text()


def test_a_kernel_out_of_memory_at_a_containers_limit(tmp_path: Path) -> None:
    """The real thing: a run held to 400 MB in a memory cgroup, as a container is, whose cell
    takes more; the kernel's out-of-memory killer ends the kernel, and the error says so."""
    try:
        cgroup = MemoryCgroup.create("test-oom", 400)
    except OSError as error:
        pytest.skip(f"no memory cgroup may be made here: {error}")
    script = (
        "import json, sys; from pathlib import Path\n"
        "from workbooks.running.execution import execute_notebook\n"
        "out = Path(sys.argv[2])\n"
        "e = execute_notebook(Path(sys.argv[1]), out / 'out.ipynb', {'allocate_mb': 32},"
        " cwd=out, cell_timeout=60, run_timeout=120)\n"
        "print(json.dumps(e.error))\n"
    )
    try:
        notebook = str(NOTEBOOKS / "kernel_dies.ipynb")
        done = subprocess.run(
            cgroup.inside([sys.executable, "-c", script, notebook, str(tmp_path)]),
            capture_output=True,
            text=True,
            timeout=180,
        )
        kills = cgroup.oom_kills()
    finally:
        cgroup.remove()
    assert done.returncode == 0, done.stderr  # the calling process lives on to say it
    error = json.loads(done.stdout)
    assert error["kind"] == "dead-kernel"
    assert "killed by SIGKILL: most often the out-of-memory killer" in error["message"]
    assert kills >= 1, "the cgroup counted no out-of-memory kill"
    assert "before" in (tmp_path / "out.ipynb").read_text()


def test_unreadable_notebook_still_leaves_an_output(tmp_path: Path) -> None:
    execution = run("unreadable.ipynb", tmp_path)
    assert execution.error is not None
    assert execution.error["kind"] == "internal" and execution.error["cell_index"] is None
    notebook = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert "could not be run" in notebook.cells[0].source
    with pytest.raises(RunFailedError):
        execution.raise_for_status()


def test_concurrent_runs_keep_their_own_cwd_and_environment(tmp_path: Path) -> None:
    results: dict[str, Execution] = {}

    def one(name: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        results[name] = execute_notebook(
            NOTEBOOKS / "succeeds.ipynb",
            folder / "out.ipynb",
            {"greeting": name},
            cwd=folder,
            cell_timeout=20,
            run_timeout=60,
            env={"RUN_MARKER": f"marker-{name}"},
        )

    threads = [threading.Thread(target=one, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("first", "second"):
        assert results[name].status == "succeeded", results[name].error
        assert (tmp_path / name / "evidence" / "greeting.txt").read_text() == name
        assert (tmp_path / name / "evidence" / "marker.txt").read_text() == f"marker-{name}"
    assert "RUN_MARKER" not in os.environ


# -- fill_summary ----------------------------------------------------------------------------------


def _execution(error: dict | None = None) -> Execution:
    moment = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
    return Execution(
        status="failed" if error else "succeeded",
        error=error,
        started_at=moment,
        finished_at=moment.replace(second=3),
    )


def _notebook(path: Path, *, summary_cell: bool) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1")]
    if summary_cell:
        cell = nbformat.v4.new_markdown_cell("## Summary\n\n(placeholder)")
        cell.metadata["tags"] = ["summary"]
        cells.insert(1, cell)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(path))
    return path


FINDINGS = [
    Finding(severity="info", title="checked the deploys"),
    Finding(severity="critical", title="p99 latency tripled", observed=1.2, unit="seconds"),
]


def test_fill_summary_replaces_the_tagged_cell(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "nb.ipynb", summary_cell=True)
    fill_summary(path, FINDINGS, _execution())
    cells = nbformat.read(str(path), as_version=4).cells
    assert len(cells) == 3
    source = cells[1].source
    assert "placeholder" not in source
    assert source.index("p99 latency tripled") < source.index("checked the deploys")
    assert "Run succeeded" in source


def test_fill_summary_inserts_a_cell_and_shows_the_failure_first(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "nb.ipynb", summary_cell=False)
    error = {
        "kind": "exception",
        "ename": "KeyError",
        "evalue": "'route'",
        "cell_index": 4,
        "message": "cell 4 (In [3]) raised KeyError: 'route'",
    }
    fill_summary(path, FINDINGS, _execution(error))
    cells = nbformat.read(str(path), as_version=4).cells
    assert cells[0].source == "# Title" and "summary" in cells[1].metadata.tags
    source = cells[1].source
    assert "Run failed (exception)" in source and "cell 4 (In [3]) raised KeyError" in source
    assert source.index("Run failed") < source.index("p99 latency tripled")


# -- workbook_parameters -----------------------------------------------------------------------


def _runbook():
    return load_runbooks(RUNBOOKS)["tiny-latency"]


def test_parameters_from_several_alerts() -> None:
    group = parse_alert_group(
        payload(
            alert("HighLatency", service="api", route="/a", severity="warning"),
            alert(
                "HighLatency",
                service="api",
                route="/b",
                severity="critical",
                starts="2026-11-28T14:01:30Z",
            ),
            {
                **alert("HighLatency", service="api", route="/c", severity="info"),
                "status": "resolved",
                "endsAt": "2026-11-28T14:30:00Z",
            },
        )
    )
    parameters = workbook_parameters(_runbook(), group.alerts, group, source="demo")
    assert set(parameters) == set(PARAMETER_NAMES)
    assert parameters["severity"] == "critical"
    assert parameters["status"] == "firing" and parameters["ends_at"] == ""
    assert parameters["labels"] == {"alertname": "HighLatency", "service": "api"}
    assert parameters["starts_at"] == "2026-11-28T14:01:30Z"
    assert parameters["fingerprints"] == ["fp-highlatency"] * 3
    assert parameters["annotations"] == {"summary": "HighLatency is firing"}


def test_parameters_of_one_resolved_alert() -> None:
    resolved = {
        **alert("HighLatency", service="api", route="/a"),
        "status": "resolved",
        "endsAt": "2026-11-28T15:00:00Z",
    }
    group = parse_alert_group(payload(resolved))
    parameters = workbook_parameters(
        _runbook(), group.alerts, group, source="/evidence", lookback="30m", baseline="7d"
    )
    assert parameters["labels"] == group.alerts[0].labels
    assert parameters["status"] == "resolved"
    assert parameters["ends_at"] == "2026-11-28T15:00:00Z"
    assert (parameters["lookback"], parameters["baseline"]) == ("30m", "7d")


def test_credentials_in_the_source_url_are_refused() -> None:
    group = parse_alert_group(payload(alert("HighLatency")))
    with pytest.raises(ConfigError, match="WORKBOOKS_PROMETHEUS_USERNAME"):
        workbook_parameters(
            _runbook(), group.alerts, group, source="https://bob:s3cret@prom.example:9090"
        )


# -- run_alert and replay ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, Config, list]:
    """One alert group routed to two runbooks: one succeeds, one raises."""
    root = tmp_path_factory.mktemp("archive")
    config = Config(notebooks=str(RUNBOOKS), archive=str(root))
    archive = Archive(root)
    group = parse_alert_group(
        payload(alert("HighLatency", service="api"), alert("HighErrorRate", service="api"))
    )
    return archive, config, run_alert(group, config=config, archive=archive, source="demo")


def test_run_alert_archives_each_route(archived: tuple[Archive, Config, list]) -> None:
    archive, _, records = archived
    by_runbook = {record.runbook: record for record in records}
    assert set(by_runbook) == {"tiny-latency", "tiny-broken"}
    assert len({record.incident_id for record in records}) == 1
    assert [record.run_id for record in archive.runs()] != []
    latency = by_runbook["tiny-latency"]
    assert latency.status == "succeeded" and latency.error is None
    assert sorted(path.name for path in latency.path.iterdir()) == [
        "alert.json",
        "evidence",
        "findings.json",
        "run.json",
        "workbook.ipynb",
    ]
    assert latency.top_finding_severity == "critical"
    assert latency.finding_counts == {"critical": 1, "warning": 0, "info": 1}
    assert latency.alert_name == "HighLatency" and latency.service == "api"
    assert len(latency.runbook_hash) == 12
    seen = json.loads((latency.path / "evidence" / "seen.json").read_text())
    assert seen["source"] == "demo" and seen["labels"]["alertname"] == "HighLatency"
    assert seen["evidence_dir"].endswith("/evidence") and ".staging" in seen["evidence_dir"]
    document = json.loads((latency.path / "findings.json").read_text())
    assert set(document) == {
        "incident",
        "runbook",
        "status",
        "started_at",
        "finished_at",
        "findings",
    }
    # most important first: the critical finding, though the notebook recorded it second
    assert [f["title"] for f in document["findings"]] == [
        "p99 latency above baseline",
        "HighLatency checked",
    ]
    summary = next(
        cell
        for cell in nbformat.read(str(latency.path / "workbook.ipynb"), as_version=4).cells
        if "summary" in cell.metadata.get("tags", [])
    )
    assert "p99 latency above baseline" in summary.source and "Run succeeded" in summary.source


def test_a_failing_runbook_is_archived_with_its_error(
    archived: tuple[Archive, Config, list],
) -> None:
    archive, _, records = archived
    broken = next(record for record in records if record.runbook == "tiny-broken")
    assert broken.status == "failed"
    assert broken.error is not None and broken.error["kind"] == "exception"
    assert broken.error["ename"] == "RuntimeError"
    assert archive.get(broken.run_id).error == broken.error
    assert [finding.title for finding in archive.findings(broken)] == ["error rate rising"]
    text = (broken.path / "workbook.ipynb").read_text()
    assert "Run failed (exception)" in text


def test_replay_is_a_new_run_of_the_same_incident(archived: tuple[Archive, Config, list]) -> None:
    archive, config, records = archived
    original = next(record for record in records if record.runbook == "tiny-latency")
    again = replay(archive, original.run_id, config=config)
    assert again.incident_id == original.incident_id
    assert again.run_id != original.run_id and again.status == "succeeded"
    assert again.source == str(original.path / "evidence")
    seen = json.loads((again.path / "evidence" / "seen.json").read_text())
    assert seen["source"] == again.source
    assert archive.get(original.incident_id).run_id == again.run_id


def test_unknown_alertname_archives_nothing(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    group = parse_alert_group(payload(alert("NobodyHandlesThis")))
    config = Config(notebooks=str(RUNBOOKS))
    with pytest.raises(UnknownRunbookError, match="NobodyHandlesThis"):
        run_alert(group, config=config, archive=archive, source="demo")
    assert not (tmp_path / "archive").exists()


def test_the_recorded_source_never_carries_credentials(tmp_path: Path) -> None:
    """``prometheus`` is recorded as the configured URL, without its userinfo or token."""
    config = Config(
        notebooks=str(RUNBOOKS),
        prometheus={"url": "http://ops:hunter2@prom.internal:9090/?token=s3cret"},
    )
    archive = Archive(tmp_path / "archive")
    group = parse_alert_group(payload(alert("HighLatency", service="api")))

    [record] = run_alert(group, config=config, archive=archive, source="prometheus")

    assert record.source.startswith("http://prom.internal:9090")
    recorded = (record.path / "run.json").read_text()
    for secret in ("ops", "hunter2", "s3cret"):
        assert secret not in record.source and secret not in recorded
    seen = json.loads((record.path / "evidence" / "seen.json").read_text())
    assert seen["source"] == "prometheus"  # the notebook reads the URL from the config itself


def test_config_routing_sends_a_team_alert_and_its_replay_to_a_runbook(tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "notebooks": str(RUNBOOKS),
            "routing": [
                {
                    "match": {"alertname": "CheckoutP99", "team": "payments"},
                    "runbook": "tiny-latency",
                }
            ],
        }
    )
    archive = Archive(tmp_path / "archive")
    group = parse_alert_group(
        payload(alert("CheckoutP99", team="payments"), alert("HighErrorRate", team="payments"))
    )

    records = run_alert(group, config=config, archive=archive, source="demo")

    assert sorted(record.runbook for record in records) == ["tiny-broken", "tiny-latency"]
    latency = next(record for record in records if record.runbook == "tiny-latency")
    assert latency.alert_name == "CheckoutP99"
    again = replay(archive, latency.run_id, config=config)
    assert again.runbook == "tiny-latency" and again.alert_name == "CheckoutP99"
    assert again.incident_id == latency.incident_id
    with pytest.raises(UnknownRunbookError, match="CheckoutP99"):
        run_alert(group, config=Config(notebooks=str(RUNBOOKS)), archive=archive, source="demo")


def test_a_run_without_evidence_cannot_be_replayed_and_says_what_to_do(
    archived: tuple[Archive, Config, list], tmp_path: Path
) -> None:
    archive, config, records = archived
    latency = next(record for record in records if record.runbook == "tiny-latency")
    copy = Archive(tmp_path / "copy")
    folder = copy.root / latency.path.relative_to(archive.root)
    shutil.copytree(latency.path, folder)
    shutil.rmtree(folder / "evidence")
    record = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**record, "source": "http://prom:9090"}))
    copy.reindex()

    with pytest.raises(ArchiveError, match="saved no evidence") as caught:
        replay(copy, latency.run_id, config=config)
    assert "workbook run --alert" in str(caught.value)
