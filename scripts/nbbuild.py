"""Build runbook notebooks from a compact description (a maintainer's tool, not part of runs).

The notebooks in notebooks/ are the source of truth and may be edited in JupyterLab; this
script only saves typing when a runbook is first written, and keeps the six-section skeleton
and the parameters cell identical across runbooks.

    python scripts/nbbuild.py high-latency     # rewrites notebooks/high-latency.ipynb
    python scripts/nbbuild.py                  # every runbook, and templates/runbook.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def parameters_source(defaults: dict[str, Any]) -> str:
    lines = ["# Parameters: papermill replaces this cell's values. Never put a secret here."]
    for name, value in defaults.items():
        lines.append(f"{name} = {value!r}")
    return "\n".join(lines)


def opening_source(runbook: str, modules: str) -> str:
    return (
        f"import workbooks\n{modules}\n\n"
        f"incident = workbooks.open_incident(\n"
        f"    {runbook!r},\n"
        "    alert_name=alert_name, severity=severity, status=status, labels=labels,\n"
        "    annotations=annotations, starts_at=starts_at, ends_at=ends_at, group_key=group_key,\n"
        "    fingerprints=fingerprints, lookback=lookback, baseline=baseline, source=source,\n"
        ")"
    )


def build(spec: dict[str, Any]) -> nbformat.NotebookNode:
    md = nbformat.v4.new_markdown_cell
    code = nbformat.v4.new_code_cell
    cells = [
        md(f"# {spec['title']}\n\n{spec['intro']}"),
        md(
            "## Summary\n\n*Filled in when the workbook has run: the top findings, worst first. "
            "Running by hand? See **Summary of findings** at the end.*",
            metadata={"tags": ["summary"]},
        ),
        code(parameters_source(spec["parameters"]), metadata={"tags": ["parameters"]}),
        code(opening_source(spec["runbook"], spec["imports"])),
    ]
    for kind, text in spec["cells"]:
        cells.append(md(text) if kind == "md" else code(text))
    cells += [
        md("## Summary of findings"),
        code("incident.summary()"),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "workbooks": {
            "runbook": spec["runbook"],
            "title": spec["short_title"],
            "alerts": spec["alerts"],
            "group": spec["group"],
            "summary": spec["summary"],
        },
    }
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{spec['runbook']}-{index:02d}"
    return notebook


def write(spec: dict[str, Any], path: Path) -> None:
    nbformat.write(build(spec), path)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    import runbook_specs  # type: ignore[import-not-found]

    for runbook in sys.argv[1:] or [*runbook_specs.SPECS, "template"]:
        if runbook == "template":
            spec, target = runbook_specs.TEMPLATE, ROOT / "templates" / "runbook.ipynb"
        else:
            spec, target = runbook_specs.SPECS[runbook], ROOT / "notebooks" / f"{runbook}.ipynb"
        write(spec, target)
        print(f"wrote {target}")
