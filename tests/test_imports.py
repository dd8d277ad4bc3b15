"""What importing the package costs: slow third-party imports stay off the paths that need speed.

Each check runs in a fresh interpreter, so nothing imported by the test session hides a cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbooks.running.warm import PRELOAD


def _modules_after(statement: str) -> set[str]:
    loaded = "sorted(name for name, module in sys.modules.items() if module is not None)"
    code = f"import sys, json\n{statement}\nprint(json.dumps({loaded}))"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(completed.stdout))


FORMAT_CHECKERS = {
    "fqdn",
    "idna",
    "isoduration",
    "jsonpointer",
    "rfc3339_validator",
    "rfc3986_validator",
    "rfc3987_syntax",
    "uri_template",
    "webcolors",
}


def test_running_a_workbook_loads_no_format_checker_nor_rfc3987s_grammar() -> None:
    """jsonschema imports the checkers of optional string formats when they are installed
    (about 55 ms of every run's command), among them rfc3987_syntax, which builds a Lark
    grammar at import (about 1 s; python-jsonschema/jsonschema#1428). Runs never check formats."""
    loaded = _modules_after("import workbooks, nbformat, jsonschema")
    assert "jsonschema._format" in loaded
    assert not FORMAT_CHECKERS & loaded
    running = _modules_after("import workbooks.running.runner, papermill, nbformat, jsonschema")
    assert not {"rfc3987_syntax", "lark"} & running


def test_jsonschema_checks_its_other_formats_and_the_checkers_import_elsewhere() -> None:
    """Only jsonschema's own import of the optional checkers is refused: it checks the formats
    it needs no package for, skips the others as when they are absent, and the same packages
    import as usual for anyone else in the process."""
    loaded = _modules_after(
        "import workbooks, nbformat, jsonschema\n"
        "checker = jsonschema.FormatChecker()\n"
        "assert not checker.conforms('not an address', 'ipv4')\n"
        "assert checker.conforms('not a color', 'color')\n"
        "import idna, webcolors, isoduration, rfc3986_validator\n"
        "assert idna.encode('example.com') == b'example.com'"
    )
    assert {"idna", "webcolors", "isoduration", "rfc3986_validator"} <= loaded
    installed = _modules_after(
        "import jsonschema\nassert not jsonschema.FormatChecker().conforms('not a color', 'color')"
    )
    assert {"webcolors", "idna"} <= installed


HEAVY = {"pandas", "papermill", "nbformat", "nbclient", "matplotlib", "numpy", "jupyter_client"}


def _modules_after_cli(*args: str, archive: Path) -> set[str]:
    """The modules a `workbook ARGS` process has loaded when the command is done."""
    return _modules_after(
        "import contextlib, io, os\n"
        f"os.environ['WORKBOOKS_ARCHIVE'] = {str(archive)!r}\n"
        "from workbooks.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({list(args)!r}, prog_name='workbook')\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
    )


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An archive holding one real demo run (the CLI as a user runs it), and its run id."""
    archive = tmp_path_factory.mktemp("imports") / "archive"
    completed = subprocess.run(
        [sys.executable, "-m", "workbooks", "demo", "high-latency", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
        env={**os.environ, "WORKBOOKS_ARCHIVE": str(archive)},
    )
    run = json.loads(completed.stdout)
    run = run[0] if isinstance(run, list) else run
    assert run["status"] == "succeeded"
    return archive, run["run_id"]


@pytest.mark.parametrize(
    "args", [("--help",), ("list",), ("runbooks",), ("show", "RUN"), ("show", "RUN", "--json")]
)
def test_reading_commands_stay_off_the_heavy_imports(
    args: tuple[str, ...], demo_archive: tuple[Path, str]
) -> None:
    """`workbook --help`, list, show, runbooks answer in about 0.2 s because none of them
    loads pandas, matplotlib, papermill, nbformat or a kernel client (issue 12)."""
    archive, run_id = demo_archive
    loaded = _modules_after_cli(*(run_id if arg == "RUN" else arg for arg in args), archive=archive)
    assert "workbooks.cli" in loaded
    assert not {name.split(".")[0] for name in loaded} & HEAVY


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("--version",)])
def test_help_loads_neither_the_config_nor_the_archive(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    """Help builds every command's options and nothing else: pydantic (the config, the run
    records) and importlib.metadata were 0.3 of the 0.55 s that `workbook --help` took on a
    loaded machine (issue 12)."""
    loaded = _modules_after_cli(*args, archive=tmp_path / "archive")
    assert "workbooks.cli" in loaded
    assert not {name.split(".")[0] for name in loaded} & {"pydantic", "pydantic_core", "yaml"}
    assert not {"workbooks.archive.store", "workbooks.core.config"} & loaded
    if args != ("--version",):  # the version is the installed package's metadata
        assert "importlib.metadata" not in loaded


def test_a_demo_run_from_the_shell_starts_its_kernel_warm(demo_archive: tuple[Path, str]) -> None:
    """The one-shot run's kernel was started before papermill, yet its notebook counts from
    In [1], keeps every chart, and wrote its evidence into the run folder."""
    archive, run_id = demo_archive
    (folder,) = archive.glob(f"*/{run_id}")
    notebook = json.loads((folder / "workbook.ipynb").read_text(encoding="utf-8"))
    counts = [cell["execution_count"] for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert counts[0] == 1
    charts = [
        output
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(charts) >= 5
    assert list((folder / "evidence").iterdir())


def test_the_process_that_runs_a_workbook_leaves_pandas_to_the_kernel(tmp_path: Path) -> None:
    """`workbook demo` (like run, replay and the service) only chooses the source and drives
    papermill: pandas, numpy and matplotlib load in the kernel, where the cells need them, not
    in the calling process too, where they would compete with the kernel's start (issue 12)."""
    loaded = _modules_after_cli("demo", "high-memory", archive=tmp_path / "archive")
    assert "workbooks.running.runner" in loaded
    assert not {name.split(".")[0] for name in loaded} & {"pandas", "matplotlib", "numpy"}
    assert "pyarrow" not in loaded and "boto3" not in loaded  # papermill's hdfs:// and s3://
    assert "IPython" not in loaded  # jupyter_client's kernelspec lookup asks it for a folder


def test_kernelspecs_are_looked_for_where_ipython_would_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The kernel manager names IPython's kernels folder itself (manager.py): the same folder
    IPython gives, with IPYTHONDIR set and unset, and the same list as jupyter_client's."""
    from IPython.paths import get_ipython_dir
    from jupyter_client.kernelspec import KernelSpecManager

    from workbooks.running.manager import KernelManager, ipython_kernels

    for ipythondir in (None, str(tmp_path / "ipython"), "~/elsewhere/../ipython"):
        if ipythondir is None:
            monkeypatch.delenv("IPYTHONDIR", raising=False)
        else:
            monkeypatch.setenv("IPYTHONDIR", ipythondir)
        assert ipython_kernels() == os.path.join(get_ipython_dir(), "kernels")
        assert KernelSpecManager().kernel_dirs[-1] == ipython_kernels()
    manager = KernelManager(kernel_name="python3")
    assert manager.kernel_spec_manager.kernel_dirs == KernelSpecManager().kernel_dirs
    assert manager.kernel_spec.language == "python"


def test_papermill_still_finds_the_plugins_packages_declare(tmp_path: Path) -> None:
    """papermill's engines and I/O handlers of other packages (entry points) are registered
    as before, though read once (running/plugins.py), and entrypoints is left as it was."""
    (tmp_path / "fakeplug.py").write_text(
        "class Engine:\n    pass\n\n\nclass Handler:\n    pass\n", encoding="utf-8"
    )
    info = tmp_path / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[papermill.engine]\nfake-engine = fakeplug:Engine\n\n"
        "[papermill.io]\nfake:// = fakeplug:Handler\n",
        encoding="utf-8",
    )
    code = (
        "import entrypoints, workbooks.running.execution\n"
        "from papermill.engines import papermill_engines\n"
        "from papermill.iorw import papermill_io\n"
        "assert papermill_engines.get_engine('fake-engine').__name__ == 'Engine'\n"
        "assert papermill_io.get_handler('fake://x.ipynb').__name__ == 'Handler'\n"
        "assert entrypoints.get_group_all.__module__ == 'entrypoints'\n"
        "print(sorted(e.name for e in entrypoints.get_group_all('papermill.engine')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "['fake-engine']"


def test_papermill_is_spared_pyarrow_but_nothing_else_is() -> None:
    """Only papermill's own import of pyarrow.fs and boto3 is refused: parquet evidence, read
    and written in the same process afterwards, imports pyarrow as usual."""
    loaded = _modules_after(
        "import workbooks.running.runner, papermill.iorw\n"
        "assert 'pyarrow' not in sys.modules\n"
        "import pyarrow.parquet, pyarrow.fs, boto3"
    )
    assert {"pyarrow.parquet", "pyarrow.fs", "boto3", "papermill.iorw"} <= loaded


def test_only_a_run_that_queries_prometheus_loads_its_client() -> None:
    """requests and prometheus-api-client cost a cold kernel 60-80 ms: a run's kernel loads
    them when its source is a Prometheus, never for a demo or a replay of evidence."""
    opening = (
        "from workbooks.core.config import PrometheusSettings\n"
        "from workbooks.notebook.sources import open_source\n"
        "source = open_source({!r}, runbook='high-latency', settings=PrometheusSettings())\n"
    )
    replaying = _modules_after(f"{PRELOAD}\n{opening.format('demo')}")
    assert {"workbooks.notebook.incident", "workbooks.notebook.sources"} <= replaying
    assert not {"requests", "prometheus_api_client"} & replaying
    live = _modules_after(opening.format("http://127.0.0.1:9"))
    assert {"requests", "prometheus_api_client"} <= live
