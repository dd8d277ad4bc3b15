"""``workbook test``: run a runbook on its synthetic cases and say which it diagnosed."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from workbooks.cli.common import EXIT_BAD_INPUT, EXIT_RUN_FAILED
from workbooks.core.errors import UnknownRunbookError, WorkbooksError


@click.command(name="test")
@click.argument("runbook")
@click.option("--scenario", metavar="NAME", help="Only this case (by case id or cause name).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as a JSON list.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep Prometheus' data and the runs' archive here [default: a temporary folder].",
)
def test(runbook: str, scenario: str | None, as_json: bool, workdir: Path | None) -> None:
    """Check a runbook on its synthetic incidents.

    Runs RUNBOOK on each of its synthetic cases in a real Prometheus and checks its diagnosis.

    One line per case: PASS or FAIL, the case, what it planted, what the top finding said.
    Exits 1 if a case failed, 2 for an unknown runbook or scenario. Needs prometheus and
    promtool on PATH.

    \b
    Example:
      workbook test high-latency
      workbook test high-memory --scenario mem-step --json
    """
    from workbooks.synthetic.check import check_runbook, results_json

    try:
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="workbook-test-") as scratch:
                results = check_runbook(runbook, scenario=scenario, workdir=Path(scratch))
        else:
            results = check_runbook(runbook, scenario=scenario, workdir=workdir)
    except UnknownRunbookError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except WorkbooksError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_RUN_FAILED)
    if as_json:
        click.echo(results_json(results))
    else:
        for result in results:
            verdict = "PASS" if result.passed else "FAIL"
            said = result.top_title or "(no findings)"
            if result.top_subject:
                said += f" [{', '.join(f'{k}={v}' for k, v in result.top_subject.items())}]"
            click.echo(
                f"{verdict}  {result.id:<22} expected {result.expectation}; "
                f"top finding: {said} ({result.seconds:.1f} s)"
            )
            if not result.passed:
                click.echo(f"      why: {result.reason}")
        failed = sum(not result.passed for result in results)
        click.echo(f"{len(results) - failed} passed, {failed} failed", err=True)
    if any(not result.passed for result in results):
        sys.exit(EXIT_RUN_FAILED)
