"""``workbook new``: the four files of a new runbook, ready to fill in.

A runbook is a notebook (its prose and thin cells), a step module (its logic, on the shared
investigation steps), a queries file (its PromQL, under logical names) and a scenario module
(synthetic incidents with planted causes, which ``workbook test`` diagnoses). The notebook's fixed
cells come from :mod:`workbooks.authoring.skeleton`; the three Python/YAML files are rendered from
``templates/new/*.j2``. Nothing is overwritten: an existing file stops the whole command before
anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import nbformat
from nbformat import NotebookNode

from workbooks.authoring.skeleton import (
    DESCRIBE_CALL,
    SECTIONS,
    RunbookOutline,
    code,
    escalation_cells,
    markdown,
    new_notebook,
    opening_source,
    outline_problems,
    parameters_cell,
    summary_cell,
    summary_of_findings_cells,
)
from workbooks.core.errors import AuthoringError
from workbooks.core.paths import PROJECT_ROOT
from workbooks.running.routing import load_runbooks

TEMPLATES_DIR = PROJECT_ROOT / "templates" / "new"
QUERIES_DIR = Path("lib/workbooks/notebook/queries")


@dataclass(frozen=True)
class RunbookFiles:
    """Where a runbook's four files live under a project root."""

    notebook: Path
    module: Path
    queries: Path
    scenario: Path

    @classmethod
    def under(cls, root: Path, outline: RunbookOutline) -> RunbookFiles:
        package = root / "lib" / "workbooks"
        return cls(
            notebook=root / "notebooks" / f"{outline.runbook}.ipynb",
            module=package / "runbooks" / f"{outline.module}.py",
            queries=root / QUERIES_DIR / f"{outline.runbook}.yaml",
            scenario=package / "synthetic" / "scenarios" / f"{outline.module}.py",
        )

    def all(self) -> tuple[Path, ...]:
        return (self.notebook, self.module, self.queries, self.scenario)


def query_names(outline: RunbookOutline) -> tuple[str, str]:
    """The two placeholder queries a new runbook starts with: its symptom and a breakdown.

    Prefixed with the module name, as catalog names are shared by every runbook.
    """
    return f"{outline.module}_level", f"{outline.module}_by_instance"


def draft_notebook(outline: RunbookOutline) -> NotebookNode:
    """The notebook of a new runbook: the fixed cells, and prose to replace in each section."""
    level, by_instance = query_names(outline)
    module = outline.module
    cells = [
        markdown(
            f"# {outline.title}\n\n"
            f"Runbook **{outline.runbook}** ({outline.group} group): {outline.summary}\n\n"
            "Run it top to bottom. Every query is a named entry of the catalog "
            f"(`lib/workbooks/notebook/queries/{outline.runbook}.yaml`, overridable under "
            "`queries:` in your config); to try a changed query, pass `promql=...` to "
            "`incident.query` in that cell and re-run it."
        ),
        summary_cell(),
        parameters_cell(outline.demo_parameters()),
        code(opening_source(outline.runbook, module)),
        markdown(
            f"{SECTIONS[0]}\n\n"
            "**What it means.** Which SLO or limit the alert protects, and what users feel.\n\n"
            "**Severity.** When it is critical, when a warning."
        ),
        code(DESCRIBE_CALL),
        markdown(
            f"{SECTIONS[1]}\n\n"
            "- [ ] Is it still happening? (checked below: the last minutes against the baseline)\n"
            "- [ ] The first thing to do to stabilize, and the section that tells you when."
        ),
        code(
            f'level = incident.query("{level}")\n{module}.still_happening(incident, level)',
        ),
        markdown(
            f"{SECTIONS[2]}\n\n### 3.1 Where\n\n"
            "Each instance against **its own** baseline, so the one that is always largest is "
            "not blamed for its size."
        ),
        code(
            f'by_instance = incident.query("{by_instance}")\n'
            f"where = {module}.breakdown(incident, by_instance)"
        ),
        markdown(
            "### 3.2 What changed\n\nDid a version roll out just before the onset, and does the "
            "change follow it across instances?"
        ),
        code(
            'versions = incident.query("model_versions", baseline=False)\n'
            f"{module}.what_changed(incident, versions, where)"
        ),
        markdown(f"{SECTIONS[3]}\n\nChosen by what was found above, causes first."),
        code(f"{module}.resolution(incident)"),
        markdown(
            f"{SECTIONS[4]}\n\n"
            "- What would have caught this earlier, or stopped it.\n"
            "- After the incident: review and update this runbook."
        ),
        *escalation_cells(),
        *summary_of_findings_cells(),
    ]
    return new_notebook(outline, cells)


@dataclass(frozen=True)
class NewRunbook:
    """What ``create_runbook`` wrote, and what the author does next."""

    outline: RunbookOutline
    files: RunbookFiles

    def next_steps(self) -> list[str]:
        runbook, files = self.outline.runbook, self.files
        return [
            f"Write what the alert means, the checklist and prevention in {files.notebook.name} "
            "(sections 1, 2 and 5), in JupyterLab or any editor.",
            f"Replace the placeholder queries in {files.queries.name}: the metrics this runbook "
            "reads, units, topk for high-cardinality breakdowns.",
            f"Fill in the steps in {files.module.name} on the shared investigation steps, each "
            "with a unit test; add a cell per step to the notebook.",
            f"Plant causes in the scenario module {files.scenario.name} (causes, cases, demo).",
            f"workbook lint notebooks/{runbook}.ipynb",
            f"workbook test {runbook}",
            f"scripts/record-demo {runbook}   # the bundled demo its defaults replay",
        ]


def create_runbook(
    outline: RunbookOutline, *, root: Path = PROJECT_ROOT, templates: Path = TEMPLATES_DIR
) -> NewRunbook:
    """Write the runbook's four files under ``root``; refuse before writing anything if one
    exists or the outline is bad."""
    problems = outline_problems(outline)
    if problems:
        raise AuthoringError("; ".join(problems))
    files = RunbookFiles.under(root, outline)
    existing = [path for path in files.all() if path.exists()]
    if existing:
        raise AuthoringError(
            f"runbook {outline.runbook!r} exists already ({', '.join(map(str, existing))}); "
            "edit those files, or pick another id"
        )
    _refuse_claimed_alerts(outline, root / "notebooks")
    rendered = _render_templates(outline, templates)
    notebook = draft_notebook(outline)
    contents = {
        files.module: rendered["runbook.py.j2"],
        files.queries: rendered["queries.yaml.j2"],
        files.scenario: rendered["scenario.py.j2"],
    }
    for path, text in contents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    files.notebook.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, files.notebook)
    return NewRunbook(outline, files)


def _refuse_claimed_alerts(outline: RunbookOutline, notebooks: Path) -> None:
    # An alertname routes to one runbook: a second claim would break routing for both.
    if not notebooks.is_dir():
        return
    for runbook in load_runbooks(notebooks).values():
        claimed = sorted(set(runbook.alerts) & set(outline.alerts))
        if claimed:
            raise AuthoringError(
                f"alertname {', '.join(claimed)} is handled by runbook {runbook.id!r} already; "
                "an alert routes to one runbook, so pick other alertnames or extend that runbook"
            )


def _render_templates(outline: RunbookOutline, templates: Path) -> dict[str, str]:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Python and YAML, not HTML
    )
    level, by_instance = query_names(outline)
    variables = {
        "runbook": outline.runbook,
        "module": outline.module,
        "title": outline.title,
        "group": outline.group,
        "alerts": list(outline.alerts),
        "summary": outline.summary,
        "level_query": level,
        "by_instance_query": by_instance,
    }
    rendered = {}
    for name in ("runbook.py.j2", "queries.yaml.j2", "scenario.py.j2"):
        try:
            rendered[name] = environment.get_template(name).render(**variables)
        except jinja2.TemplateError as exc:
            raise AuthoringError(
                f"cannot render {templates / name}: {exc}; check the template, or pass the "
                "project's templates/new folder"
            ) from exc
    return rendered


__all__ = [
    "NewRunbook",
    "RunbookFiles",
    "create_runbook",
    "draft_notebook",
    "query_names",
]
