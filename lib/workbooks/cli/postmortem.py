"""Commands for people: open a workbook, report, note, and the archive's own upkeep."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from workbooks.cli.common import Duration, Session, WorkbookGroup, handles_errors, table


class IsoTime(click.ParamType):
    """An ISO 8601 time; UTC when it names no zone."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not a time; write it as 2026-11-20T14:10:00Z", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _labels(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE (e.g. service=inference-api)")
        labels[key.strip()] = text
    return labels


@click.command(name="open")
@click.argument("runbook", required=False)
@click.option("--alert", "alert_file", metavar="FILE|-", help="Webhook payload to investigate.")
@click.option("--at", type=IsoTime(), help="When it began, for an incident without an alert.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_labels,
    help="An alert label, with --at; repeat it.",
)
@click.option("--from", "from_run", metavar="ID", help="An archived run: its alert and evidence.")
@click.option("--prometheus", metavar="URL", help="Prometheus to query [default: the configured].")
@click.option("--lookback", type=Duration(as_text=True), default="2h", show_default=True)
@click.option(
    "--baseline",
    type=Duration(as_text=True),
    default=None,
    help="Default: the runbook's own (metadata.workbooks.baseline), else 1d.",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write it [default: ./investigations/TIME-RUNBOOK].",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only (a remote machine).")
@click.option("--port", type=click.IntRange(0, 65535), help="JupyterLab's port; 0: any free one.")
@click.option("--prepare-only", is_flag=True, help="Write the notebook; do not start JupyterLab.")
@click.pass_obj
@handles_errors
def open_workbook(
    session: Session,
    runbook: str | None,
    alert_file: str | None,
    at: datetime | None,
    labels: dict[str, str],
    from_run: str | None,
    prometheus: str | None,
    lookback: str,
    baseline: str | None,
    folder: Path | None,
    no_browser: bool,
    port: int | None,
    prepare_only: bool,
) -> None:
    """Open a runbook in JupyterLab for an alert.

    For an alert (--alert), a time and labels (--at, --label), or an archived run (--from).

    Writes a parameterized copy of the runbook (papermill's prepare-only: nothing runs) and
    opens it in JupyterLab, in this environment's kernel: Run > Run All Cells runs the whole
    investigation, and every query can be edited. A JupyterLab already running on this folder
    is reused. JupyterLab listens on 127.0.0.1 only; from another machine use an SSH tunnel.

    \b
    Example:
      workbook open high-latency --alert alert.json
      workbook open high-latency --at 2026-11-20T14:10:00Z --label service=inference-api
      workbook open --from 20261128T140507Z-high-latency --no-browser --port 8890
    """
    from workbooks.core.alert import read_alert_group
    from workbooks.running.investigate import launch_jupyterlab
    from workbooks.running.investigate import open_workbook as prepare

    config = session.config()
    archive = session.archive(config)
    path = prepare(
        runbook,
        alert=read_alert_group(alert_file) if alert_file else None,
        at=at,
        labels=labels,
        from_run=from_run,
        folder=folder,
        source=prometheus,
        lookback=lookback,
        baseline=baseline,
        config=config,
        archive=archive,
    )
    click.echo(f"prepared {path}")
    if prepare_only:
        return
    url = launch_jupyterlab(path, no_browser=no_browser, port=port, archive_dir=archive.root)
    click.echo(f"open {url}")
    click.echo("JupyterLab runs in the background; `jupyter server stop PORT` ends it.")


@click.command()
@click.argument("id")
@click.option(
    "--format",
    "format",
    type=click.Choice(["html", "md"]),
    default="html",
    show_default=True,
    help="md writes report.md and its charts as PNG files in report_files/.",
)
@click.pass_obj
@handles_errors
def report(session: Session, id: str, format: str) -> None:
    """Render a run's post-mortem report.

    Writes it into the run's folder and prints its path. ID is a run id, or an incident id
    (its newest run). The HTML page stands alone: the summary first, then each section with
    its charts and findings, the code folded away. --format md writes report.md and its charts.

    \b
    Example:
      workbook report 20261128T1405Z-highlatency-3f9a2c1b --format md
    """
    from workbooks.archive.report import render_report

    click.echo(render_report(session.archive(), id, format=format))  # type: ignore[arg-type]


@click.command()
@click.argument("id")
@click.argument("text")
@click.option(
    "--author",
    default=lambda: os.environ.get("USER") or getpass.getuser(),
    show_default="$USER",
    help="Who did it.",
)
@click.pass_obj
@handles_errors
def note(session: Session, id: str, text: str, author: str) -> None:
    """Record an action taken on an incident.

    ID is an incident id, or a run id (its incident). Notes carry their author and time, are
    kept in the incident's folder (notes.jsonl) and show in its timeline and report; new runs
    and reindexing keep them.

    \b
    Example:
      workbook note 20261128T1405Z-highlatency-3f9a2c1b "rolled back model 2.4.0" --author ana
    """
    if not text.strip():
        raise click.BadParameter("say what was done", param_hint="TEXT")
    added = session.archive().add_note(id, text, author=author)
    click.echo(
        f"noted on {added.incident_id} by {added.author} at {added.created_at:%Y-%m-%d %H:%M} UTC"
    )


@click.group(cls=WorkbookGroup)
def archive() -> None:
    """Serve, measure and prune the archive.

    \b
    Example:
      workbook archive stats
    """


@archive.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=9096, show_default=True)
@click.pass_obj
@handles_errors
def archive_serve(session: Session, host: str, port: int) -> None:
    """Browse the archive in a web browser.

    Read-only: incidents newest first with filters and search, each incident's timeline, its
    reports, notebooks and evidence. It has no login: keep it on 127.0.0.1 or behind a proxy.

    \b
    Example:
      workbook archive serve --port 9096
    """
    from workbooks.archive.web import serve_archive

    archive = session.archive()
    click.echo(f"serving {archive.location} at http://{host}:{port}/ (Ctrl-C stops)", err=True)
    serve_archive(archive, host=host, port=port)


@archive.command()
@click.option(
    "--older-than", type=Duration(), required=True, help="Age of runs to prune, e.g. 90d."
)
@click.option("--keep-findings", is_flag=True, help="Keep findings and records, mark runs pruned.")
@click.option("--yes", is_flag=True, help="Delete; without it, only say what would go.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
@handles_errors
def prune(
    session: Session, older_than: timedelta, keep_findings: bool, yes: bool, as_json: bool
) -> None:
    """Delete old runs (a dry run unless --yes).

    Deletes the notebooks and evidence of runs started longer ago than --older-than. Without
    --keep-findings a run's folder goes whole, and an incident whose runs all go is removed with
    its notes. With it, findings.json, run.json, alert.json and the index row stay (the run is
    marked pruned), so the incident still lists, searches and reports its findings.

    \b
    Example:
      workbook archive prune --older-than 90d --keep-findings
      workbook archive prune --older-than 90d --keep-findings --yes
    """
    plan = session.archive().prune(
        older_than=older_than, keep_findings=keep_findings, dry_run=not yes
    )
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    for line in plan.describe():
        click.echo(line)


@archive.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
@handles_errors
def stats(session: Session, as_json: bool) -> None:
    """Incidents, runs, notes, bytes on disk, oldest and newest run.

    \b
    Example:
      workbook archive stats --json
    """
    found = session.archive().stats()
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    table(found.rows(), ("ARCHIVE", str(found.root)))
