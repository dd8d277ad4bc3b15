"""Warm kernels: started ahead with the imports done, each used for one run, nothing carried over.

Real kernels throughout; a run on a warm kernel must leave the same artifact as on a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from test_service import wait_for
from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config
from workbooks.core.errors import RunFailedError
from workbooks.core.paths import DEMO_ALERT_FILE, demo_dir
from workbooks.running.execution import execute_notebook
from workbooks.running.runner import run_alert
from workbooks.running.warm import KernelPool, prepare, start_warm_kernel

# Prints what a run's notebook sees of its kernel, then leaves a variable behind.
PROBE = """\
import os, sys
print(json.dumps({
    "cwd": os.getcwd(),
    "pid": os.getpid(),
    "evidence": os.environ.get("WORKBOOKS_EVIDENCE_DIR"),
    "now": os.environ.get("WORKBOOKS_NOW"),
    "stale": os.environ.get("WORKBOOKS_PROBE_STALE"),
    "names": sorted(name for name in globals() if not name.startswith("_")),
    "pandas_loaded": "pandas" in sys.modules,
    "left_by_a_previous_run": "secret_of_the_last_incident" in globals(),
    "kernel": type(get_ipython().kernel).__name__,
    "debugger": getattr(get_ipython().kernel, "debugger", None) is not None,
    "debugpy_loaded": sys.modules.get("debugpy") is not None,
    "warmed_up": "workbooks.notebook.warmup" in sys.modules,
    "parquet_loaded": "pyarrow.parquet" in sys.modules,
    "pyplot_loaded": "matplotlib.pyplot" in sys.modules,
    "matplotlib_loaded": "matplotlib" in sys.modules,
}))
secret_of_the_last_incident = 42
"""


def probe_notebook(folder: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import json"), nbformat.v4.new_code_cell(PROBE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    path = folder / "probe.ipynb"
    nbformat.write(notebook, str(path))
    return path


def run_probe(folder: Path, notebook: Path, pool: KernelPool) -> tuple[dict, list]:
    folder.mkdir()
    with pool.lease() as kernel:
        execution = execute_notebook(
            notebook,
            folder / "out.ipynb",
            {},
            cwd=folder,
            cell_timeout=30,
            run_timeout=60,
            env={"WORKBOOKS_EVIDENCE_DIR": str(folder / "evidence")},
            kernel=kernel,
        )
    assert execution.status == "succeeded", execution.error
    assert not kernel.manager.has_kernel, "a warm kernel must not outlive its run"
    cells = nbformat.read(str(folder / "out.ipynb"), as_version=4).cells
    code = [cell for cell in cells if cell.cell_type == "code"]
    seen = json.loads(code[-1].outputs[0]["text"])
    return seen, [cell.execution_count for cell in code]


def test_each_run_gets_its_folder_environment_and_a_kernel_of_its_own(tmp_path: Path) -> None:
    notebook = probe_notebook(tmp_path)
    ours = os.getcwd()
    with KernelPool(1) as pool:
        first, counts = run_probe(tmp_path / "run-1", notebook, pool)
        second, _ = run_probe(tmp_path / "run-2", notebook, pool)  # the pool's replacement
    assert os.getcwd() == ours
    assert first["cwd"] == str(tmp_path / "run-1")
    assert first["evidence"] == str(tmp_path / "run-1" / "evidence")
    assert second["cwd"] == str(tmp_path / "run-2")
    assert first["pandas_loaded"] and second["pandas_loaded"], "the preload did not happen"
    assert not second["left_by_a_previous_run"], "state passed from one run to the next"
    # Nobody debugs a run's kernel: it starts without ipykernel's debugger (or debugpy).
    assert first["kernel"] == "RunKernel"
    assert not first["debugger"] and not first["debugpy_loaded"]
    # The silent set-up is invisible: the notebook's cells count from In [1] (parameters first).
    assert counts[0] == 1 and counts == sorted(counts)


def test_a_warm_kernel_runs_with_the_settings_of_now_not_of_its_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`workbook test` pins WORKBOOKS_NOW per case: a kernel started before sees the new one."""
    notebook = probe_notebook(tmp_path)
    monkeypatch.setenv("WORKBOOKS_PROBE_STALE", "set when the kernel started")
    monkeypatch.delenv("WORKBOOKS_NOW", raising=False)
    with KernelPool(1, runs=1) as pool:
        wait_for(lambda: pool.ready == 1, 60, "a kernel ready")
        monkeypatch.delenv("WORKBOOKS_PROBE_STALE")
        monkeypatch.setenv("WORKBOOKS_NOW", "2026-11-20T15:00:00+00:00")
        seen, _ = run_probe(tmp_path / "run", notebook, pool)
    assert seen["now"] == "2026-11-20T15:00:00+00:00"
    assert seen["stale"] is None, "a setting removed since the kernel started is still there"
    assert not {"settings", "key"} & set(seen["names"]), "the set-up left names in the notebook"


def test_a_failed_set_up_says_so_without_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBOOKS_DATABASE_URL", "postgresql://u:pw-Never-Shown@127.0.0.1/db")
    kernel = start_warm_kernel()
    try:
        with pytest.raises(RunFailedError) as raised:
            prepare(kernel, cwd=tmp_path / "no-such-folder", env={})
    finally:
        kernel.discard()
    assert "set-up" in str(raised.value) and "no-such-folder" in str(raised.value)
    assert "pw-Never-Shown" not in str(raised.value)


def test_a_pool_for_one_run_starts_a_kernel_when_it_runs_out(tmp_path: Path) -> None:
    notebook = probe_notebook(tmp_path)
    with KernelPool(1, runs=1) as pool:
        run_probe(tmp_path / "run-1", notebook, pool)
        seen, _ = run_probe(tmp_path / "run-2", notebook, pool)
    assert seen["cwd"] == str(tmp_path / "run-2")


# The first kernel started with this preload fails in the way named; every later one is fine.
FIRST_FAILS = """\
import os as _os, pathlib as _pathlib, threading as _threading
_first = not _pathlib.Path({flag!r}).exists()
_pathlib.Path({flag!r}).touch()
if _first and {how!r} == "preload":
    raise RuntimeError("the first kernel's preload failed")
if _first and {how!r} == "dies":
    _threading.Timer(0.2, _os._exit, (1,)).start()  # killed while it waits in the pool
"""


@pytest.mark.parametrize("how", ["preload", "dies"])
def test_a_run_gets_a_new_kernel_when_its_warm_one_failed_or_died(tmp_path: Path, how: str) -> None:
    notebook = probe_notebook(tmp_path)
    preload = FIRST_FAILS.format(flag=str(tmp_path / "started-once"), how=how)
    with KernelPool(1, runs=1, preload=preload) as pool:
        deadline = time.monotonic() + 60
        while not pool.ready and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # the first kernel has now failed, or died while it waited
        seen, _ = run_probe(tmp_path / "run", notebook, pool)
    assert seen["cwd"] == str(tmp_path / "run")


def test_a_service_kernel_warms_up_while_idle_and_keeps_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = probe_notebook(tmp_path)
    scratch = tmp_path / "tmp"  # the kernels' temporary folder (they inherit TMPDIR)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    with KernelPool(1) as pool:
        plain, _ = run_probe(tmp_path / "plain", notebook, pool)
    with KernelPool(1, warm_up=True) as pool:
        wait_for(lambda: pool.ready == 1, 60, "a warm kernel")
        warmed, counts = run_probe(tmp_path / "warmed", notebook, pool)

    assert not plain["warmed_up"] and not plain["parquet_loaded"]
    assert warmed["warmed_up"] and warmed["parquet_loaded"], "the warm-up did not happen"
    # matplotlib is the drawer's (notebook/drawing.py), unless the warm-up drew in the kernel.
    assert not plain["matplotlib_loaded"] and warmed["matplotlib_loaded"]
    # Nothing of it is seen by the run: the same names, no pyplot, no file, In [1] first.
    assert warmed["names"] == plain["names"]
    assert not warmed["pyplot_loaded"]
    assert not any(scratch.glob("workbooks-warm-up-*"))
    assert counts[0] == 1 and counts == sorted(counts)


def test_no_warm_up_beside_a_run(tmp_path: Path) -> None:
    """A pool of one kernel starts the replacement beside the run; if its imports end while
    the run is going, it does not also warm up on the run's spare core."""
    notebook = probe_notebook(tmp_path)
    with KernelPool(1, warm_up=True) as pool:
        with pool.lease() as going:
            wait_for(lambda: pool.ready == 1, 60, "the replacement, started beside the run")
            going.discard()  # as its run would
        seen, _ = run_probe(tmp_path / "next", notebook, pool)
    assert not seen["warmed_up"]


def test_a_warm_up_that_fails_leaves_the_kernel_as_it_was(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from workbooks.notebook import warmup

    def broken() -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(warmup, "_exercise", broken)
    warmup.warm_up()  # does not raise
    assert "warm-up failed" in caplog.text and "no space left" in caplog.text


def test_a_replacement_waits_for_the_run_while_another_kernel_is_ready(tmp_path: Path) -> None:
    with KernelPool(2) as pool:
        wait_for(lambda: pool.ready == 2, 60, "two kernels ready")
        with pool.lease() as first:
            time.sleep(1.0)
            # The run has a core to itself: a kernel is ready for the next alert.
            assert (pool.ready, pool.starting) == (1, 0)
            with pool.lease() as second:
                # None left ready: the replacements start now, beside the runs.
                wait_for(lambda: pool.starting == 2, 5, "both replacements starting")
                second.discard()  # as its run would
            first.discard()
        wait_for(lambda: pool.ready == 2, 60, "both replacements ready")


def kernels_marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``marker`` (a kernel inherits its starter's)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("WORKBOOKS_TEST_MARKER") == marker:
                found.append(process)
    return found


def test_closing_a_pool_stops_a_kernel_still_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that fails on bad input after starting its kernel does not wait for the
    kernel's imports: the start is stopped and the kernel's process is gone."""
    marker = f"{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("WORKBOOKS_TEST_MARKER", marker)
    pool = KernelPool(1, runs=1, preload="import time; time.sleep(120)")
    pool.wait_launched()
    wait_for(lambda: kernels_marked(marker), 30, "the kernel's process")
    began = time.monotonic()
    pool.close()
    assert time.monotonic() - began < 60  # not the 120 s its imports would take
    wait_for(lambda: not kernels_marked(marker), 10, "the kernel's process to end")


def test_bad_input_after_the_kernel_started_leaves_no_kernel(tmp_path: Path) -> None:
    """`workbook run` starts its kernel before reading the alert; a malformed alert is still
    a clear error (exit 2), nothing is archived, and the kernel does not outlive the command."""
    marker = f"{os.getpid()}-{time.time_ns()}"
    alert = tmp_path / "alert.json"
    alert.write_text('{"alerts": "not a list"}')
    completed = subprocess.run(
        [sys.executable, "-m", "workbooks", "run", "--alert", str(alert)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "WORKBOOKS_ARCHIVE": str(tmp_path / "archive"),
            "WORKBOOKS_TEST_MARKER": marker,
        },
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("error: ") and "alert" in completed.stderr
    assert not (tmp_path / "archive").exists() or not any((tmp_path / "archive").iterdir())
    wait_for(lambda: not kernels_marked(marker), 10, "no kernel left by the command")


def test_a_kernel_that_cannot_preload_says_what_failed() -> None:
    with pytest.raises(Exception, match="no_such_module"):
        start_warm_kernel(preload="import no_such_module")


def test_demo_runs_on_a_warm_kernel_as_on_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # where a kernel keeps history
    payload = (demo_dir("high-latency") / DEMO_ALERT_FILE).read_text(encoding="utf-8")
    config = Config(archive=str(tmp_path / "archive"))
    records = {}
    with KernelPool(1, warm_up=True) as pool:  # as the service's
        wait_for(lambda: pool.ready == 1, 60, "a warm kernel")
        for kind, kernels in (("warm", pool), ("fresh", None)):
            archive = Archive(tmp_path / kind)
            group = parse_alert_group(json.loads(payload))
            (record,) = run_alert(
                group, config=config, archive=archive, source="demo", kernels=kernels
            )
            records[kind] = (record, archive)
    warm, fresh = records["warm"][0], records["fresh"][0]
    assert warm.status == fresh.status == "succeeded"
    assert warm.top_finding_title == fresh.top_finding_title
    assert [f.title for f in records["warm"][1].findings(warm)] == [
        f.title for f in records["fresh"][1].findings(fresh)
    ]
    notebooks = [
        nbformat.read(str(record.path / "workbook.ipynb"), as_version=4) for record in (warm, fresh)
    ]
    images = [
        sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))
        for nb in notebooks
    ]
    assert images[0] == images[1] > 0, "every chart is in the warm run's artifact"
    assert list((warm.path / "evidence").iterdir()), "the evidence went to the run's folder"
    # The artifact is the record of a run's cells: no kernel kept them in IPython's history too.
    assert (tmp_path / "ipython").is_dir()
    assert not list((tmp_path / "ipython").rglob("history.sqlite"))
