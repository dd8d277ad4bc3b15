"""A one-shot run's kernel process started before jupyter_client (running/prelaunch.py): the
run gets that very process, as a kernel jupyter_client would have started, and nothing of it
outlives the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from jupyter_client.blocking import BlockingKernelClient

from test_imports import _modules_after
from test_warm import probe_notebook, run_probe
from workbooks.core.errors import RunFailedError
from workbooks.running.prelaunch import prelaunch
from workbooks.running.warm import KernelPool, start_warm_kernel

PRELOADED = ("pandas", "workbooks.notebook.incident", "workbooks.runbooks.steps")


def test_the_prelaunch_needs_no_jupyter_client() -> None:
    assert "jupyter_client" not in _modules_after("import workbooks.running.prelaunch")


def test_a_run_gets_the_prelaunched_process_as_its_kernel(tmp_path: Path) -> None:
    first = prelaunch()
    assert first is not None
    with KernelPool(1, runs=1, prelaunched=first) as pool:
        seen, counts = run_probe(tmp_path / "run", probe_notebook(tmp_path), pool)
    assert seen["pid"] == first.process.pid, "the run's kernel is not the prelaunched process"
    assert seen["cwd"] == str(tmp_path / "run")
    assert seen["evidence"] == str(tmp_path / "run" / "evidence")
    assert seen["pandas_loaded"] and seen["kernel"] == "RunKernel"
    assert counts[0] == 1 and counts == sorted(counts)
    assert first.process.poll() is not None, "the kernel outlived its run"
    assert not first.connection_file.exists(), "the connection file (with its key) was left"


def test_a_one_run_kernel_does_its_imports_before_it_is_asked() -> None:
    """The prelaunched kernel loads pandas and the package as it starts, and forks its chart
    drawer once pandas is loaded: the first request it answers, not the preload, finds them."""
    first = prelaunch()
    assert first is not None
    client = BlockingKernelClient(connection_file=str(first.connection_file))
    client.load_connection_file()
    client.start_channels()
    drawing = "__import__('workbooks.notebook.drawing', fromlist=['_state'])._state"
    try:
        client.wait_for_ready(timeout=120)  # answered once its start, imports included, is done
        reply = client.execute_interactive(
            "",
            silent=True,
            user_expressions={
                "loaded": f"sorted(__import__('sys').modules.keys() & {set(PRELOADED)!r})",
                "drawer": f"{drawing}['drawer'] is not None or not {drawing}['enabled']",
                "collector": "__import__('gc').isenabled()",  # off during the imports only
            },
            timeout=60,
        )
    finally:
        client.stop_channels()
        first.discard()
    found = {k: v["data"]["text/plain"] for k, v in reply["content"]["user_expressions"].items()}
    assert found == {"loaded": repr(sorted(PRELOADED)), "drawer": "True", "collector": "True"}


def test_a_kernelspec_of_the_users_is_started_as_jupyter_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `python3` kernelspec of the user's (here: with an environment of its own) is not the
    command the prelaunch started: that process is stopped and the kernelspec's is started."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (the user's)",
                "language": "python",
                "env": {"PRELAUNCH_PROBE_SPEC": "the user's"},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    first = prelaunch()
    assert first is not None
    kernel = start_warm_kernel(
        prelaunched=first,
        preload="import os; assert os.environ['PRELAUNCH_PROBE_SPEC'] == \"the user's\"",
    )
    try:
        assert kernel.alive and kernel.manager.provisioner.pid != first.process.pid
        assert first.process.poll() is not None and not first.connection_file.exists()
    finally:
        kernel.discard()


def test_a_temporary_folder_behind_a_symlink_still_gets_the_prelaunched_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jupyter_client names the connection file by its real path in the command it compares."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "link"))
    first = prelaunch()
    assert first is not None
    kernel = start_warm_kernel(prelaunched=first, preload="pass")
    try:
        assert kernel.manager.provisioner.pid == first.process.pid
    finally:
        kernel.discard()
    assert not first.connection_file.exists()


def test_a_prelaunched_kernel_that_dies_fails_the_start_with_its_reason() -> None:
    first = prelaunch()
    assert first is not None
    first.process.kill()
    first.process.wait()
    with pytest.raises(RunFailedError, match="died while starting"):
        start_warm_kernel(prelaunched=first)
    assert not first.connection_file.exists()


def test_closing_a_pool_that_never_took_its_prelaunched_kernel_stops_it() -> None:
    first = prelaunch()
    assert first is not None
    KernelPool(0, runs=1, prelaunched=first).close()  # no starter to take it
    assert first.process.poll() is not None and not first.connection_file.exists()


def test_another_kernel_name_is_not_prelaunched() -> None:
    assert prelaunch("ir") is None


def test_workbook_demo_leaves_no_kernel_and_no_connection_file(tmp_path: Path) -> None:
    """The command as a user types it: it succeeds, and its temporary folder keeps no
    connection file (a kernel's key) afterwards."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "workbooks", "demo", "high-memory", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "TMPDIR": str(tmp),
            "WORKBOOKS_ARCHIVE": str(tmp_path / "archive"),
        },
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["status"] == "succeeded"
    assert not list(tmp.glob("kernel-*.json"))
