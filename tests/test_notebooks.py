"""The committed runbook notebooks: clean, thin, self-describing, in step with the skeleton
generator, and runnable as stored."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbooks.authoring.new import draft_notebook
from workbooks.authoring.skeleton import RunbookOutline, fixed_cell_drift, opening_source
from workbooks.running.parameters import PARAMETER_NAMES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PARAMETERS = list(PARAMETER_NAMES)
SECTIONS = [
    "## 1. Alert description",
    "## 2. Immediate actions",
    "## 3. Investigation",
    "## 4. Resolution steps",
    "## 5. Prevention",
    "## 6. Escalation",
]
ALL = NOTEBOOKS


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


# Each code cell parsed once, while this module is collected, as in test_layers.py: Python
# 3.11.7's ast.parse can fail with "AST constructor recursion depth mismatch" once other tests
# have run threads in the process (cpython#106905, pytest#10763); collection comes first.
TREES = {
    (path, index): ast.parse(_source(cell))
    for path in NOTEBOOKS
    for index, cell in enumerate(_load(path)["cells"])
    if cell["cell_type"] == "code"
}


def test_the_three_foundation_runbooks_exist() -> None:
    assert {path.stem for path in NOTEBOOKS} >= {"high-latency", "high-memory", "accuracy-drop"}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_committed_notebook_carries_no_outputs(path: Path) -> None:
    for cell in _load(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: strip outputs before committing"
            assert cell.get("execution_count") is None, f"{path.name}: execution count left"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_follows_the_contract(path: Path) -> None:
    notebook = _load(path)
    meta = notebook["metadata"]["workbooks"]
    assert set(meta) >= {"runbook", "title", "alerts", "group", "summary"}
    assert meta["runbook"] == path.stem
    assert meta["alerts"], "a runbook handles at least one alertname"
    cells = notebook["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    assigned = [
        node.targets[0].id
        for node in TREES[path, cells.index(tagged[0])].body
        if isinstance(node, ast.Assign)
    ]
    assert assigned == PARAMETERS
    summary = [c for c in cells if "summary" in c.get("metadata", {}).get("tags", [])]
    assert len(summary) == 1 and summary[0]["cell_type"] == "markdown"
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    positions = [markdown.find(section) for section in SECTIONS]
    assert -1 not in positions, f"{path.name} lacks a section: {SECTIONS}"
    assert positions == sorted(positions), "sections in runbook order"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_is_thin(path: Path) -> None:
    """No function or class in a notebook, no secrets in its parameters."""
    for index, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        tree = TREES[path, index]
        defined = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        ]
        assert not defined, f"{path.name}: move logic into lib/workbooks"
        text = _source(cell).lower()
        for word in ("password", "token", "secret", "authorization"):
            assert f"{word} =" not in text, f"{path.name}: no secret is ever a parameter"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_fixed_cells_are_the_skeleton_generators(path: Path) -> None:
    """Parameters, opening, Summary and Escalation cells: as `workbook new` writes them."""
    drift = fixed_cell_drift(_load(path))

    assert drift == [], f"{path.name}: " + "\n".join(drift)


def test_a_drifted_fixed_cell_is_caught() -> None:
    notebook = _load(ROOT / "notebooks" / "high-memory.ipynb")
    opening = next(
        cell for cell in notebook["cells"] if _source(cell).startswith("import workbooks")
    )
    opening["source"] = _source(opening).replace("lookback=lookback", "lookback='6h'")
    escalation = next(
        cell for cell in notebook["cells"] if _source(cell) == "incident.escalation()"
    )
    escalation["source"] = "incident.escalation(limit=1)"

    drift = fixed_cell_drift(notebook)

    assert [line.split(" (cell")[0] for line in drift] == [
        "the opening cell",
        "the Escalation cells",
    ]
    assert opening_source("high-memory", "high_memory") in drift[0]


def test_a_new_runbooks_draft_is_in_step_with_the_skeleton() -> None:
    outline = RunbookOutline(
        runbook="low-disk-space",
        title="Low disk space",
        alerts=("LowDiskSpace",),
        group="infrastructure",
        summary="Free space per mountpoint.",
    )

    assert fixed_cell_drift(draft_notebook(outline)) == []


@pytest.mark.slow
def test_every_notebook_runs_as_stored_with_nbval(tmp_path: Path) -> None:
    """`pytest --nbval-lax` on each committed notebook: its defaults replay the bundled demo."""
    environment = {
        **os.environ,
        "WORKBOOKS_EVIDENCE_DIR": "off",
        # No Prometheus anywhere: a notebook that reached for one would fail.
        "WORKBOOKS_PROMETHEUS_URL": "http://127.0.0.1:1",
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "addopts=",
            "-W",
            "ignore::DeprecationWarning",
            *map(str, NOTEBOOKS),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert f"{sum(_code_cells(p) for p in NOTEBOOKS)} passed" in completed.stdout


def _code_cells(path: Path) -> int:
    return sum(1 for cell in _load(path)["cells"] if cell["cell_type"] == "code")
