"""Writing a runbook: `workbook new` in a copy of the project, and `workbook lint` rule by rule."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml

from workbooks.authoring.lint import LintError, lint_notebooks
from workbooks.authoring.new import RunbookFiles, create_runbook, draft_notebook, query_names
from workbooks.authoring.skeleton import SECTIONS, RunbookOutline
from workbooks.core.errors import AuthoringError
from workbooks.notebook.catalog import Catalog
from workbooks.synthetic.lab import prometheus_available

ROOT = Path(__file__).resolve().parents[1]
WORKBOOK = Path(sys.executable).parent / "workbook"
DOC = ROOT / "docs" / "writing-a-runbook.md"
OUTLINE = RunbookOutline(
    runbook="gpu-saturation",
    title="GPU saturation",
    alerts=("GPUSaturated", "GPUThrottled"),
    group="infrastructure",
    summary="CPU per instance against its baseline; the instance, route or rollout responsible.",
)


def project_copy(target: Path) -> Path:
    """The parts of the project a runbook lives in, copied so `workbook new` can write there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("lib", "templates", "notebooks"):
        shutil.copytree(ROOT / folder, target / folder, ignore=ignore)
    return target


def run_in(
    project: Path, *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """A command with the copy's package first on the path (so it writes and reads the copy)."""
    environment = {**os.environ, "PYTHONPATH": str(project / "lib")}
    environment.pop("WORKBOOKS_NOTEBOOKS", None)
    environment.pop("WORKBOOKS_CONFIG", None)
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or project,
        timeout=timeout,
        check=False,
    )


# --- workbook new -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def new_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = project_copy(tmp_path_factory.mktemp("project"))
    result = run_in(
        project,
        str(WORKBOOK),
        "new",
        "gpu-saturation",
        "--group",
        "infrastructure",
        "--alerts",
        "GPUSaturated,GPUThrottled",
        "--title",
        "GPU saturation",
    )
    assert result.returncode == 0, result.stderr
    return project, result.stdout


def test_new_writes_the_four_files_and_says_what_next(new_project: tuple[Path, str]) -> None:
    project, output = new_project
    written = [
        project / "notebooks" / "gpu-saturation.ipynb",
        project / "lib" / "workbooks" / "runbooks" / "gpu_saturation.py",
        project / "lib" / "workbooks" / "notebook" / "queries" / "gpu-saturation.yaml",
        project / "lib" / "workbooks" / "synthetic" / "scenarios" / "gpu_saturation.py",
    ]
    for path in written:
        assert path.is_file(), path
        assert str(path) in output
    assert "workbook lint notebooks/gpu-saturation.ipynb" in output
    assert "workbook test gpu-saturation" in output
    assert "scripts/record-demo gpu-saturation" in output


def test_the_new_runbook_routes_and_its_queries_load(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    check = (
        "import json\n"
        "from workbooks.notebook.catalog import Catalog\n"
        f"print(json.dumps([Catalog.load()[name].unit for name in {list(query_names(OUTLINE))}]))"
    )
    result = run_in(project, sys.executable, "-c", check)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["per_second", "per_second"]

    listed = run_in(project, str(WORKBOOK), "runbooks", "--json")
    assert listed.returncode == 0, listed.stderr
    runbooks = {row["id"]: row for row in json.loads(listed.stdout)}
    assert runbooks["gpu-saturation"]["alerts"] == ["GPUSaturated", "GPUThrottled"]
    assert runbooks["gpu-saturation"]["group"] == "infrastructure"


def test_the_new_module_imports_on_the_shared_steps(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    check = (
        "import json, workbooks.runbooks.gpu_saturation as steps\n"
        "print(json.dumps([steps.__file__, steps.QUIET, sorted(steps.THRESHOLDS.defaults),"
        " [callable(getattr(steps, name)) for name in"
        " ('still_happening', 'breakdown', 'what_changed', 'resolution')]]))"
    )
    result = run_in(project, sys.executable, "-c", check)
    assert result.returncode == 0, result.stderr
    module_file, quiet, thresholds, callables = json.loads(result.stdout)
    assert module_file == str(project / "lib" / "workbooks" / "runbooks" / "gpu_saturation.py")
    assert quiet.startswith("A quiet run")
    assert "change_ratio_critical" in thresholds
    assert all(callables)


def test_the_new_scenario_module_imports(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    module = "workbooks.synthetic.scenarios.gpu_saturation"
    result = run_in(project, sys.executable, "-c", f"import {module}")
    assert result.returncode == 0, result.stderr


@pytest.mark.prometheus
@pytest.mark.slow
def test_a_new_runbook_with_its_blanks_filled_passes_lint_and_test(
    new_project: tuple[Path, str],
) -> None:
    """The kit's promise: `workbook new`, point the two placeholder queries at the metric the
    drafted scenario writes, and `workbook lint` and `workbook test` pass on a real Prometheus."""
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    project, _ = new_project
    scenario = project / "lib" / "workbooks" / "synthetic" / "scenarios" / "gpu_saturation.py"
    metric = re.search(r'^METRIC = "([a-z_]+)"', scenario.read_text(), re.M)
    assert metric, "the drafted scenario names the metric it writes"
    queries = project / "lib" / "workbooks" / "notebook" / "queries" / "gpu-saturation.yaml"
    names = list(yaml.safe_load(queries.read_text()))
    queries.write_text(
        f"{names[0]}:\n  title: level\n  unit: count\n"
        f'  query: sum({metric.group(1)}{{service="{{service}}"}})\n'
        f"{names[1]}:\n  title: level by instance\n  unit: count\n"
        f'  query: topk(10, max by (instance) ({metric.group(1)}{{service="{{service}}"}}))\n'
    )
    notebook = project / "notebooks" / "gpu-saturation.ipynb"
    linted = run_in(project, str(WORKBOOK), "lint", str(notebook))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    tested = run_in(project, str(WORKBOOK), "test", "gpu-saturation", "--json", timeout=300)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    results = json.loads(tested.stdout)
    assert len(results) >= 2 and all(case["passed"] for case in results), results


def test_the_new_files_are_ruff_clean(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    files = [
        str(project / "lib" / "workbooks" / "runbooks" / "gpu_saturation.py"),
        str(project / "lib" / "workbooks" / "synthetic" / "scenarios" / "gpu_saturation.py"),
    ]
    ruff = str(Path(sys.executable).parent / "ruff")
    config = str(ROOT / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *command, "--config", config, *files], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_new_notebook_passes_lint(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    result = run_in(project, str(WORKBOOK), "lint", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert str(project / "notebooks" / "gpu-saturation.ipynb") in report["notebooks"]
    assert report["errors"] == []


def test_new_refuses_to_overwrite_and_writes_nothing(new_project: tuple[Path, str]) -> None:
    project, _ = new_project
    notebook = project / "notebooks" / "gpu-saturation.ipynb"
    before = notebook.read_bytes()

    result = run_in(
        project, str(WORKBOOK), "new", "gpu-saturation", "--group", "service", "--alerts", "Other"
    )

    assert result.returncode == 2
    assert "exists already" in result.stderr and str(notebook) in result.stderr
    assert notebook.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"runbook": "High_CPU"}, "lower-case words", id="bad-id"),
        pytest.param({"group": "backend"}, "group 'backend' must be one of", id="bad-group"),
        pytest.param({"alerts": ()}, "at least one alertname", id="no-alerts"),
        pytest.param({"alerts": ("GPU saturation",)}, "not Prometheus alertnames", id="bad-alert"),
        pytest.param({"alerts": ("HighLatency",)}, "handled by runbook 'high-latency'", id="taken"),
    ],
)
def test_new_refuses_a_bad_outline_before_writing(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    project = project_copy(tmp_path)
    before = sorted(path for path in project.rglob("*") if path.is_file())
    outline = replace(OUTLINE, **change)

    with pytest.raises(AuthoringError, match=re.escape(message)):
        create_runbook(outline, root=project)

    assert sorted(path for path in project.rglob("*") if path.is_file()) == before


# --- workbook lint: a good notebook, then one broken rule at a time -------------------------


def write_notebook(folder: Path, notebook: Any, name: str = "gpu-saturation") -> Path:
    path = folder / f"{name}.ipynb"
    nbformat.write(nbformat.from_dict(notebook), path)
    return path


def catalog_with_new_queries() -> Catalog:
    # A team may add queries in its config: the linter takes them into account.
    return Catalog.load({name: "sum(up)" for name in query_names(OUTLINE)})


def cell_index(notebook: Any, starts_with: str) -> int:
    return next(
        i for i, cell in enumerate(notebook["cells"]) if cell["source"].startswith(starts_with)
    )


def test_a_fresh_draft_is_clean(tmp_path: Path) -> None:
    path = write_notebook(tmp_path, draft_notebook(OUTLINE))

    assert lint_notebooks([path], catalog=catalog_with_new_queries()) == []


def _set_meta(**values: Any) -> Callable[[Any], int | None]:
    def change(notebook: Any) -> None:
        notebook["metadata"]["workbooks"].update(values)

    return change


def _code_at(starts_with: str, source: str) -> Callable[[Any], int]:
    def change(notebook: Any) -> int:
        index = cell_index(notebook, starts_with)
        notebook["cells"][index]["source"] = source
        return index

    return change


def _drop_metadata(notebook: Any) -> None:
    del notebook["metadata"]["workbooks"]


def _untag_parameters(notebook: Any) -> None:
    notebook["cells"][cell_index(notebook, "# Parameters")]["metadata"]["tags"] = []


def _second_parameters(notebook: Any) -> int:
    index = cell_index(notebook, "incident.summary()")
    notebook["cells"][index]["metadata"]["tags"] = ["parameters"]
    return index


def _drop_parameter(notebook: Any) -> int:
    index = cell_index(notebook, "# Parameters")
    cell = notebook["cells"][index]
    cell["source"] = cell["source"].replace("lookback = '2h'\n", "")
    return index


def _parameter_default(old: str, new: str) -> Callable[[Any], int]:
    def change(notebook: Any) -> int:
        index = cell_index(notebook, "# Parameters")
        cell = notebook["cells"][index]
        assert old in cell["source"]
        cell["source"] = cell["source"].replace(old, new)
        return index

    return change


def _drop_section(notebook: Any) -> None:
    index = cell_index(notebook, SECTIONS[4])
    notebook["cells"][index]["source"] = "## Prevention, later"


def _swap_sections(notebook: Any) -> int:
    first, second = cell_index(notebook, SECTIONS[3]), cell_index(notebook, SECTIONS[4])
    cells = notebook["cells"]
    fourth, fifth = cells[first]["source"], cells[second]["source"]
    cells[first]["source"], cells[second]["source"] = fifth, fourth
    return first


def _with_output(notebook: Any) -> int:
    index = cell_index(notebook, "incident.describe()")
    notebook["cells"][index]["outputs"] = [
        nbformat.v4.new_output("stream", name="stdout", text="hello\n")
    ]
    return index


def _with_count(notebook: Any) -> int:
    index = cell_index(notebook, "incident.describe()")
    notebook["cells"][index]["execution_count"] = 3
    return index


def _markdown_at(starts_with: str, extra: str) -> Callable[[Any], int]:
    def change(notebook: Any) -> int:
        index = cell_index(notebook, starts_with)
        notebook["cells"][index]["source"] += extra
        return index

    return change


VIOLATIONS = [
    pytest.param(_drop_metadata, "metadata", "metadata.workbooks is missing", id="no-metadata"),
    pytest.param(_set_meta(runbook="gpu-saturations"), "metadata", "not the file name", id="id"),
    pytest.param(_set_meta(title=""), "metadata", "title is missing", id="title"),
    pytest.param(_set_meta(alerts=[]), "metadata", "alerts must be a non-empty", id="alerts"),
    pytest.param(_set_meta(alerts="GPUSaturated"), "metadata", "alerts must be", id="alerts-str"),
    pytest.param(_set_meta(group="backend"), "metadata", "group 'backend'", id="group"),
    pytest.param(_set_meta(summary=None), "metadata", "summary is missing", id="summary"),
    pytest.param(_untag_parameters, "parameters", "no cell is tagged", id="untagged"),
    pytest.param(_second_parameters, "parameters", "a second cell", id="two-tagged"),
    pytest.param(_drop_parameter, "parameters", "not the shared names", id="missing-name"),
    pytest.param(
        _parameter_default("lookback = '2h'", "lookback = str(2) + 'h'"),
        "parameters",
        "plain literals",
        id="not-literal",
    ),
    pytest.param(_drop_section, "sections", "'## 5. Prevention' is missing", id="no-section"),
    pytest.param(_swap_sections, "sections", "out of order", id="section-order"),
    pytest.param(
        _code_at("incident.describe()", 'p = incident.query("cpu_p95_by_pod")'),
        "queries",
        "'cpu_p95_by_pod' is not in the catalog",
        id="unknown-query",
    ),
    pytest.param(_with_output, "outputs", "stored outputs", id="outputs"),
    pytest.param(_with_count, "outputs", "execution count", id="execution-count"),
    pytest.param(
        _code_at("incident.describe()", "def worst(frame):\n    return frame.max()"),
        "thin",
        "defines a def",
        id="def",
    ),
    pytest.param(
        _code_at("incident.describe()", "class Helper:\n    pass"), "thin", "a class", id="class"
    ),
    pytest.param(
        _code_at("incident.describe()", "top = sorted([1, 2], key=lambda v: -v)"),
        "thin",
        "a lambda",
        id="lambda",
    ),
    pytest.param(
        _code_at("incident.describe()", 'api_token = "c0ffee-5ecret-42"'),
        "secrets",
        "a credential assigned in code",
        id="token-in-code",
    ),
    pytest.param(
        _markdown_at(SECTIONS[0], "\n\nDashboard: https://grafana:hunter2@grafana.internal/d/x"),
        "secrets",
        "user:password@ in a URL",
        id="userinfo-url",
    ),
    pytest.param(
        _markdown_at(SECTIONS[1], "\n\nLogs: https://logs.internal/search?q=x&token=abc123"),
        "secrets",
        "a credential in a URL query string",
        id="query-token",
    ),
    pytest.param(
        _parameter_default(
            "annotations = {'summary'",
            "annotations = {'runbook_url': 'https://wiki/x?token=s3cr3t', 'summary'",
        ),
        "secrets",
        "the default of annotations holds a credential in a URL query string",
        id="secret-default",
    ),
    pytest.param(
        _parameter_default("labels = {", "labels = {'password': 'hunter22', "),
        "secrets",
        "the default of labels holds a credential",
        id="password-label",
    ),
]


@pytest.mark.parametrize(("change", "rule", "message"), VIOLATIONS)
def test_lint_catches_each_violation(
    tmp_path: Path, change: Callable[[Any], int | None], rule: str, message: str
) -> None:
    notebook = draft_notebook(OUTLINE)
    index = change(notebook)
    path = write_notebook(tmp_path, notebook)

    errors = lint_notebooks([path], catalog=catalog_with_new_queries())

    matching = [error for error in errors if error.rule == rule and message in error.message]
    assert matching, [str(error) for error in errors]
    error = matching[0]
    assert error.notebook == str(path)
    assert error.cell_index == index
    if index is not None:
        assert error.cell_id == notebook["cells"][index]["id"]
        assert f"cell {index} (id {error.cell_id})" in str(error)
    assert error.fix and "Fix: " in str(error)


def test_prose_about_credentials_is_not_a_secret(tmp_path: Path) -> None:
    notebook = draft_notebook(OUTLINE)
    _markdown_at(
        SECTIONS[5],
        "\n\nThe token comes from WORKBOOKS_PROMETHEUS_TOKEN; a password never goes here. "
        "See https://prometheus.io/docs/ (token auth) and `incident.query(name)`.",
    )(notebook)
    path = write_notebook(tmp_path, notebook)

    assert lint_notebooks([path], catalog=catalog_with_new_queries()) == []


def test_an_unreadable_notebook_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json", encoding="utf-8")

    [error] = lint_notebooks([path])

    assert (error.rule, error.cell_index) == ("notebook", None)
    assert "workbook new" in error.fix


# --- workbook lint on the project -------------------------------------------------------------


def test_lint_is_clean_on_the_committed_notebooks() -> None:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))

    errors: list[LintError] = lint_notebooks(paths)

    assert errors == [], "\n".join(map(str, errors))


def test_lint_cli_exits_1_and_names_the_cell(tmp_path: Path) -> None:
    notebook = draft_notebook(OUTLINE)
    index = _with_count(notebook)
    path = write_notebook(tmp_path, notebook)
    clean = ROOT / "notebooks" / "high-memory.ipynb"

    result = run_in(ROOT, str(WORKBOOK), "lint", str(clean), str(path), cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    cell_id = notebook["cells"][index]["id"]
    assert f"{path}: cell {index} (id {cell_id}): [outputs]" in result.stdout
    # The draft's queries are not in the project's catalog either: named, with the file to add to.
    assert "gpu_saturation_level" in result.stdout
    assert "queries/gpu-saturation.yaml" in result.stdout
    assert "2 notebook(s) checked" in result.stdout
    assert not any(line.startswith(str(clean)) for line in result.stdout.splitlines())


# --- the guide --------------------------------------------------------------------------------


def test_the_guide_commands_run_as_shown(tmp_path: Path) -> None:
    """The `workbook new` and `workbook lint` lines of docs/writing-a-runbook.md, verbatim."""
    project = project_copy(tmp_path)
    shown = [
        line.strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*workbook (new|lint) ", line)
    ]
    assert [line.split()[1] for line in shown] == ["new", "lint"], shown
    # The guide's example may have become a real runbook since: start from the project without it.
    runbook = shlex.split(shown[0])[2]
    outline = replace(OUTLINE, runbook=runbook)
    for path in RunbookFiles.under(project, outline).all():
        path.unlink(missing_ok=True)

    for line in shown:
        command = shlex.split(line.split("  #")[0])
        result = run_in(project, str(WORKBOOK), *command[1:])
        assert result.returncode == 0, (line, result.stdout, result.stderr)
    assert (project / "notebooks" / f"{runbook}.ipynb").is_file()
