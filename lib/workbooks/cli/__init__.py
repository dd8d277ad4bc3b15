"""The ``workbook`` command: a thin face over the library.

Each command opens the library objects it needs and calls one function. The library raises
plain domain exceptions; only here do they become messages on stderr and exit codes:
0 the command did its job (a run ran, whatever it found), 1 a run failed (it is archived all the
same), 2 bad input (malformed alert, unknown runbook or id, bad config), and nothing archived.
"""

from __future__ import annotations

import atexit
import gc
import logging

import click

from workbooks.cli import authoring, postmortem, runs, testing
from workbooks.cli.common import Session, WorkbookGroup, session_options
from workbooks.core.durations import parse_duration

__all__ = ["main", "parse_duration"]

# When a command has returned, its run is archived and its output written; what is left is the
# interpreter's teardown, whose garbage collections walk every object the command loaded
# (papermill, nbformat, jsonschema, pydantic): 0.25 to 0.3 s of every cold `workbook demo` on a
# loaded 2-core machine, 0.04 s with the objects frozen first. Frozen objects are left to the
# operating system, as at any process exit; files and the archive are closed by then.
atexit.register(gc.freeze)


@click.group(
    cls=WorkbookGroup,
    params=session_options(),
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="incident-workbooks", prog_name="workbook")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Incident workbooks: run parameterized runbook notebooks for alerts, and archive them.

    --config and --archive go before the command or after it.

    \b
    Example:
      workbook run --alert alert.json --prometheus http://127.0.0.1:9090
      workbook list --archive /srv/workbooks/archive --since 7d
    """
    ctx.ensure_object(Session)
    # Our messages say what failed and where; papermill's log lines would only repeat them.
    logging.getLogger("papermill").setLevel(logging.CRITICAL)


for _command in (
    runs.run,
    runs.runbooks,
    runs.list_runs,
    runs.show,
    runs.replay,
    runs.demo,
    runs.reindex,
    runs.serve,
    runs.worker,
    postmortem.open_workbook,
    postmortem.report,
    postmortem.note,
    postmortem.archive,
    authoring.new,
    authoring.lint,
    testing.test,
):
    main.add_command(_command)
