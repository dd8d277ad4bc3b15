"""The fixed cells of every runbook notebook, written in one place.

A runbook notebook is the single source of its own prose; what every runbook shares (the
parameters cell, the opening cell that builds the ``incident``, the Summary cells, the six section
headings, the Escalation cells) is built here. ``workbook new`` writes a first draft from it, and
``tests/test_notebooks.py`` checks the committed notebooks still carry exactly these cells
(:func:`fixed_cell_drift`), so the skeleton cannot drift between runbooks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nbformat
from nbformat import NotebookNode

from workbooks.running.parameters import Parameters
from workbooks.running.routing import GROUPS

SECTIONS = (
    "## 1. Alert description",
    "## 2. Immediate actions",
    "## 3. Investigation",
    "## 4. Resolution steps",
    "## 5. Prevention",
    "## 6. Escalation",
)
PARAMETERS_TAG = "parameters"
SUMMARY_TAG = "summary"
# The moment the bundled demo incidents fire; a new runbook's defaults replay its demo.
DEMO_STARTS_AT = "2026-11-20T14:10:00Z"
DEMO_SERVICE = "inference-api"

SUMMARY_SOURCE = (
    "## Summary\n\n*Filled in when the workbook has run: the top findings, worst first. "
    "Running by hand? See **Summary of findings** at the end.*"
)
SUMMARY_OF_FINDINGS_SOURCE = "## Summary of findings"
SUMMARY_CALL = "incident.summary()"
DESCRIBE_CALL = "incident.describe()"
ESCALATION_SOURCE = f"{SECTIONS[5]}\n\nFrom the team's config (`escalation:`)."
ESCALATION_CALL = "incident.escalation()"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

RUNBOOK_ID = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
ALERTNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class RunbookOutline:
    """What ``metadata.workbooks`` says about a runbook; everything else is built from it."""

    runbook: str
    title: str
    alerts: tuple[str, ...]
    group: str
    summary: str

    @property
    def module(self) -> str:
        """The Python name of the runbook's step module (``high-cpu`` -> ``high_cpu``)."""
        return self.runbook.replace("-", "_")

    def metadata(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "title": self.title,
            "alerts": list(self.alerts),
            "group": self.group,
            "summary": self.summary,
        }

    def demo_parameters(self, *, severity: str = "warning") -> Parameters:
        """Defaults that replay the runbook's bundled demo incident, offline."""
        alert_name = self.alerts[0]
        return Parameters(
            alert_name=alert_name,
            severity=severity,
            labels={"alertname": alert_name, "service": DEMO_SERVICE, "severity": severity},
            annotations={"summary": self.summary},
            starts_at=DEMO_STARTS_AT,
            source="demo",
        )


def outline_problems(outline: RunbookOutline) -> list[str]:
    """What is wrong with an outline, each with the fix; empty when it is good."""
    problems = []
    if not RUNBOOK_ID.fullmatch(outline.runbook):
        problems.append(
            f"runbook id {outline.runbook!r} must be lower-case words joined by '-' "
            "(e.g. high-cpu): it is the notebook's file name"
        )
    if outline.group not in GROUPS:
        problems.append(f"group {outline.group!r} must be one of {', '.join(GROUPS)}")
    if not outline.alerts:
        problems.append("alerts must name at least one alertname (--alerts HighCPU,CPUThrottling)")
    bad = [alert for alert in outline.alerts if not ALERTNAME.fullmatch(alert)]
    if bad:
        problems.append(f"alertnames {', '.join(map(repr, bad))} are not Prometheus alertnames")
    if not outline.title.strip():
        problems.append("title must not be empty")
    if not outline.summary.strip():
        problems.append("summary must not be empty: one line of what the runbook checks")
    return problems


# --- the fixed cells --------------------------------------------------------------------------


def markdown(source: str, *, tags: Sequence[str] = ()) -> NotebookNode:
    return nbformat.v4.new_markdown_cell(source, metadata={"tags": list(tags)} if tags else {})


def code(source: str, *, tags: Sequence[str] = ()) -> NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})


def summary_cell() -> NotebookNode:
    """The Summary at the top, which the runner fills with the top findings."""
    return markdown(SUMMARY_SOURCE, tags=[SUMMARY_TAG])


def parameters_cell(parameters: Parameters) -> NotebookNode:
    return code(parameters.cell_source(), tags=[PARAMETERS_TAG])


def opening_source(runbook: str, module: str) -> str:
    """The cell that builds ``incident`` from the parameters and imports the runbook's steps."""
    arguments = (
        "    alert_name=alert_name, severity=severity, status=status, labels=labels,\n"
        "    annotations=annotations, starts_at=starts_at, ends_at=ends_at, group_key=group_key,\n"
        "    fingerprints=fingerprints, lookback=lookback, baseline=baseline, source=source,\n"
    )
    return (
        f"import workbooks\nfrom workbooks.runbooks import {module}\n\n"
        f"incident = workbooks.open_incident(\n    {runbook!r},\n{arguments})"
    )


def escalation_cells() -> list[NotebookNode]:
    return [markdown(ESCALATION_SOURCE), code(ESCALATION_CALL)]


def summary_of_findings_cells() -> list[NotebookNode]:
    return [markdown(SUMMARY_OF_FINDINGS_SOURCE), code(SUMMARY_CALL)]


def parameter_values(source: str) -> dict[str, Any]:
    """The literal defaults a parameters cell assigns, in order (``ValueError`` if not literal)."""
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                values[target.id] = ast.literal_eval(node.value)
    return values


def new_notebook(outline: RunbookOutline, cells: Sequence[NotebookNode]) -> NotebookNode:
    """A notebook with the runbook's metadata and stable cell ids (``<runbook>-NN``)."""
    notebook = nbformat.v4.new_notebook(cells=list(cells))
    notebook.metadata = {
        "kernelspec": dict(KERNELSPEC),
        "language_info": {"name": "python"},
        "workbooks": outline.metadata(),
    }
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{outline.runbook}-{index:02d}"
    return notebook


# --- keeping committed notebooks in step ------------------------------------------------------


def _source(cell: Any) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else str(source)


def _tagged(cells: Sequence[Any], tag: str) -> list[int]:
    return [i for i, cell in enumerate(cells) if tag in cell.get("metadata", {}).get("tags", [])]


def _heading_cell(cells: Sequence[Any], heading: str) -> int | None:
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and _source(cell).startswith(heading):
            return index
    return None


def fixed_cell_drift(notebook: Any) -> list[str]:
    """Where a notebook's fixed cells differ from what this module builds; empty when in step.

    Checks the Summary cell, the parameters cell (same structure and comment, whatever the demo
    defaults), the opening cell right after it, ``incident.describe()`` right after section 1,
    the Escalation cells and the closing Summary of findings.
    """
    cells = notebook["cells"]
    meta = notebook["metadata"]["workbooks"]
    runbook = str(meta["runbook"])
    drift: list[str] = []

    def expect(index: int | None, wanted: NotebookNode, what: str) -> None:
        if index is None or index >= len(cells):
            drift.append(f"{what}: missing")
            return
        cell = cells[index]
        if (cell["cell_type"], _source(cell)) != (wanted.cell_type, wanted.source):
            drift.append(f"{what} (cell {index}) differs from the skeleton:\n{wanted.source}")

    summary = _tagged(cells, SUMMARY_TAG)
    expect(summary[0] if len(summary) == 1 else None, summary_cell(), "the Summary cell")
    tagged = _tagged(cells, PARAMETERS_TAG)
    if len(tagged) != 1:
        drift.append(f"{len(tagged)} cells are tagged {PARAMETERS_TAG!r}; the skeleton has one")
    else:
        at = tagged[0]
        try:
            parameters = Parameters(**parameter_values(_source(cells[at])))
        except (ValueError, TypeError, SyntaxError) as exc:
            drift.append(f"the parameters cell (cell {at}) is not the skeleton's: {exc}")
        else:
            expect(at, parameters_cell(parameters), "the parameters cell")
        opening = code(opening_source(runbook, runbook.replace("-", "_")))
        expect(at + 1, opening, "the opening cell")
    first = _heading_cell(cells, SECTIONS[0])
    expect(None if first is None else first + 1, code(DESCRIBE_CALL), "the describe() cell")
    last = _heading_cell(cells, SECTIONS[5])
    for offset, wanted in enumerate(escalation_cells()):
        expect(None if last is None else last + offset, wanted, "the Escalation cells")
    for offset, wanted in enumerate(summary_of_findings_cells()):
        expect(len(cells) - 2 + offset, wanted, "the Summary of findings cells")
    return drift
