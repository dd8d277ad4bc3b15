"""``workbook new`` and ``workbook lint``: write a runbook's files, check notebooks' contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from workbooks.core.errors import WorkbooksError
from workbooks.core.paths import PROJECT_ROOT, RUNBOOK_GROUPS

EXIT_LINT_ERRORS = 1
EXIT_BAD_INPUT = 2


def _alertnames(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


@click.command(short_help="Write the files of a new runbook.")
@click.argument("runbook")
@click.option(
    "--group",
    required=True,
    type=click.Choice(RUNBOOK_GROUPS),
    help="The runbook index group it belongs to.",
)
@click.option(
    "--alerts",
    required=True,
    callback=_alertnames,
    help="Alertnames it handles, comma-separated (HighCPU,CPUThrottling).",
)
@click.option("--title", help="Short title [default: from the id, 'High cpu'].")
@click.option("--summary", help="One line: what it checks and what it can name as the cause.")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=PROJECT_ROOT,
    show_default="the project",
    help="Project folder to write into.",
)
def new(
    runbook: str,
    group: str,
    alerts: tuple[str, ...],
    title: str | None,
    summary: str | None,
    root: Path,
) -> None:
    """Write a new runbook's notebook, step module, queries file and scenario module.

    Refuses (exit 2) if any of them exists already.

    \b
    Example:
      workbook new high-cpu --group infrastructure --alerts HighCPU,CPUThrottling
    """
    from workbooks.authoring.new import create_runbook
    from workbooks.authoring.skeleton import RunbookOutline

    outline = RunbookOutline(
        runbook=runbook,
        title=title or runbook.replace("-", " ").capitalize(),
        alerts=alerts,
        group=group,
        summary=summary or f"What {runbook} checks, and what it can name as the cause.",
    )
    try:
        created = create_runbook(outline, root=root)
    except WorkbooksError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    click.echo(f"wrote runbook {runbook}:")
    for path in created.files.all():
        click.echo(f"  {path}")
    click.echo("next:")
    for number, step in enumerate(created.next_steps(), start=1):
        click.echo(f"  {number}. {step}")


@click.command(short_help="Check notebooks against the contract.")
@click.argument("notebooks", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the errors as JSON.")
@click.pass_obj
def lint(session: Any, notebooks: tuple[Path, ...], as_json: bool) -> None:
    """Check runbook notebooks against the notebook contract (exit 1 on errors).

    Default: every notebook in the runbook folder. Checks metadata, the parameters cell, the six
    sections, catalog query names, stored outputs, def/class/lambda in cells, and secrets.

    \b
    Example:
      workbook lint notebooks/high-cpu.ipynb
    """
    from workbooks.authoring.lint import lint_notebooks
    from workbooks.notebook.catalog import Catalog

    try:
        config = session.config()
        paths = list(notebooks) or sorted(config.notebooks_dir.glob("*.ipynb"))
        errors = lint_notebooks(paths, catalog=Catalog.load(config.queries))
    except WorkbooksError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    if as_json:
        document = {
            "notebooks": [str(path) for path in paths],
            "errors": [error.to_dict() for error in errors],
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        for error in errors:
            click.echo(f"{error.where}: [{error.rule}] {error.message}")
            click.echo(f"    fix: {error.fix}")
        verdict = f"{len(errors)} error(s)" if errors else "clean"
        click.echo(f"{len(paths)} notebook(s) checked: {verdict}")
    if errors:
        sys.exit(EXIT_LINT_ERRORS)
