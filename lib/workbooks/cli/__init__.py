"""The ``workbook`` command: a thin face over the library.

Each command opens the library objects it needs and calls one function. The library raises
plain domain exceptions; only here do they become messages on stderr and exit codes:
0 the command did its job (a run ran, whatever it found), 1 a run failed (it is archived all the
same), 2 bad input (malformed alert, unknown runbook or id, bad config), and nothing archived.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from workbooks.archive.store import package_version
from workbooks.cli import postmortem, runs, testing
from workbooks.cli.common import _environment, _Session
from workbooks.core.config import parse_duration

__all__ = ["main", "parse_duration"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file [default: $WORKBOOKS_CONFIG, else ./workbooks.yaml if present].",
)
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Archive folder [default: $WORKBOOKS_ARCHIVE, else ./archive].",
)
@click.version_option(package_version(), prog_name="workbook")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, archive_dir: Path | None) -> None:
    """Incident workbooks: run parameterized runbook notebooks for alerts, and archive them.

    \b
    Example:
      workbook run --alert alert.json --prometheus http://127.0.0.1:9090
    """
    if config_file is not None:
        # The kernel reads its config on its own, from another cwd: hand it the same file.
        ctx.with_resource(_environment("WORKBOOKS_CONFIG", str(config_file.absolute())))
    # Our messages say what failed and where; papermill's log lines would only repeat them.
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    ctx.obj = _Session(config_file, archive_dir)


for _command in (
    runs.run,
    runs.runbooks,
    runs.list_runs,
    runs.show,
    runs.replay,
    runs.demo,
    runs.reindex,
    runs.serve,
    postmortem.open_workbook,
    postmortem.report,
    postmortem.note,
    postmortem.archive,
    testing.test,
):
    main.add_command(_command)
