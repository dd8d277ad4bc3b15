"""The ``workbook`` command: a thin face over the library.

Each command opens the library objects it needs and calls one function. The library raises
plain domain exceptions; only here do they become messages on stderr and exit codes:
0 the command did its job (a run ran, whatever it found), 1 a run failed (it is archived all the
same), 2 bad input (malformed alert, unknown runbook or id, bad config), and nothing archived.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from workbooks.archive import Archive, RunRecord, package_version
from workbooks.config import Config, load_config, parse_duration
from workbooks.errors import (
    BadAlertError,
    ConfigError,
    RunNotFoundError,
    UnknownRunbookError,
    WorkbooksError,
)
from workbooks.findings import Finding, ranked

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
DEMO_DIR = Path(__file__).parent / "demo"
_BAD_INPUT = (BadAlertError, ConfigError, UnknownRunbookError, RunNotFoundError)
_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):
    """A duration option; ``as_text`` keeps the text (notebook parameters are text)."""

    name = "duration"

    def __init__(self, *, as_text: bool = False) -> None:
        self.as_text = as_text

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            parsed = parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip() if self.as_text else parsed


@dataclass(frozen=True)
class _Session:
    config_file: Path | None
    archive_dir: Path | None

    def config(self) -> Config:
        config = load_config(self.config_file)
        if self.archive_dir is not None:
            config = config.model_copy(update={"archive": str(self.archive_dir)})
        return config

    def archive(self, config: Config | None = None) -> Archive:
        return Archive((config or self.config()).archive_dir)


def _handles_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except _BAD_INPUT as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except WorkbooksError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


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


@main.command()
@click.argument("runbook", required=False)
@click.option("--alert", "alert_file", required=True, metavar="FILE|-", help="Webhook payload.")
@click.option("--prometheus", metavar="URL", help="Prometheus to query (no credentials in it).")
@click.option(
    "--evidence",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Replay from a saved evidence folder instead of querying Prometheus.",
)
@click.option("--lookback", type=Duration(as_text=True), default="2h", show_default=True)
@click.option("--baseline", type=Duration(as_text=True), default="1d", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print findings.json (a list if several).")
@click.pass_obj
@_handles_errors
def run(
    session: _Session,
    runbook: str | None,
    alert_file: str,
    prometheus: str | None,
    evidence: Path | None,
    lookback: str,
    baseline: str,
    as_json: bool,
) -> None:
    """Run the runbooks for an alert; archive them.

    RUNBOOK is chosen from the alertname unless named. The executed notebook, its evidence and
    findings are archived even when the run fails.

    \b
    Example:
      workbook run --alert alert.json --prometheus http://127.0.0.1:9090
      workbook run high-latency --alert - --evidence archive/INCIDENT/RUN/evidence < alert.json
    """
    from workbooks.alert import read_alert_group

    group = read_alert_group(alert_file)
    config = session.config()
    if prometheus and evidence:
        raise click.UsageError("pass --prometheus or --evidence, not both")
    # "prometheus" tells the notebook to use the configured URL and credentials.
    source = str(evidence.absolute()) if evidence else prometheus
    source = source or ("prometheus" if config.prometheus.url else None)
    if not source:
        raise ConfigError(
            "no metrics source: set WORKBOOKS_PROMETHEUS_URL (or prometheus.url in the config "
            "file), or pass --prometheus URL or --evidence DIR"
        )
    from workbooks.runner import run_alert  # papermill: imported only when a run is due

    archive = session.archive(config)
    records = run_alert(
        group,
        config=config,
        archive=archive,
        source=source,
        runbook_id=runbook,
        lookback=lookback,
        baseline=baseline,
    )
    _report(records, archive, as_json=as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
@_handles_errors
def runbooks(session: _Session, as_json: bool) -> None:
    """List runbooks and the alerts they handle.

    \b
    Example:
      workbook runbooks --json
    """
    from workbooks.routing import load_runbooks

    found = sorted(
        load_runbooks(session.config().notebooks_dir).values(), key=lambda r: (r.group, r.id)
    )
    if as_json:
        rows = [
            {
                "id": runbook.id,
                "title": runbook.title,
                "group": runbook.group,
                "alerts": list(runbook.alerts),
                "summary": runbook.summary,
            }
            for runbook in found
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    _table(
        [
            (runbook.id, runbook.group, ", ".join(runbook.alerts), runbook.summary)
            for runbook in found
        ],
        ("RUNBOOK", "GROUP", "ALERTS", "SUMMARY"),
    )


@main.command(name="list")
@click.option("--runbook", help="Only runs of this runbook.")
@click.option("--since", type=Duration(), help="Only runs started this recently, e.g. 7d.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the run records as a JSON list.")
@click.pass_obj
@_handles_errors
def list_runs(
    session: _Session, runbook: str | None, since: timedelta | None, limit: int, as_json: bool
) -> None:
    """List archived runs, newest first.

    \b
    Example:
      workbook list --runbook high-latency --since 7d
    """
    archive = session.archive()
    records = archive.runs(runbook=runbook, since=since, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        click.echo(f"no runs in {archive.root}", err=True)
        return
    _table(
        [
            (
                f"{record.started_at:%Y-%m-%d %H:%M}",
                record.status,
                record.run_id,
                record.incident_id,
                _top_finding(record),
            )
            for record in records
        ],
        ("STARTED (UTC)", "STATUS", "RUN", "INCIDENT", "TOP FINDING"),
    )


@main.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="Print the run's findings.json object.")
@click.pass_obj
@_handles_errors
def show(session: _Session, id: str, as_json: bool) -> None:
    """Show a run's findings. ID is a run id, or an incident id (its newest run).

    \b
    Example:
      workbook show 20261128T1405Z-highlatency-3f9a2c1b --json
    """
    archive = session.archive()
    if as_json:
        click.echo(json.dumps(archive.show(id), indent=2, ensure_ascii=False))
        return
    record = archive.get(id)
    _describe(record, archive.findings(record), limit=None)


@main.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's findings.json.")
@click.pass_obj
@_handles_errors
def replay(session: _Session, id: str, as_json: bool) -> None:
    """Re-run an archived run from its evidence.

    The same runbook on the same alert, reading the run's saved evidence instead of Prometheus:
    a new run of the same incident.

    \b
    Example:
      workbook replay 20261128T140507Z-high-latency
    """
    from workbooks import runner

    config = session.config()
    archive = session.archive(config)
    _report([runner.replay(archive, id, config=config)], archive, as_json=as_json)


@main.command()
@click.argument("runbook", default="high-latency")
@click.option("--json", "as_json", is_flag=True, help="Print findings.json.")
@click.pass_obj
@_handles_errors
def demo(session: _Session, runbook: str, as_json: bool) -> None:
    """Run a runbook on its bundled demo incident.

    Offline: the demo evidence stands in for Prometheus. The run is archived like any other.

    \b
    Example:
      workbook demo high-latency
    """
    from workbooks.alert import read_alert_group
    from workbooks.runner import run_alert

    alert_path = DEMO_DIR / runbook / "alert.json"
    if not alert_path.is_file():
        bundled = sorted(path.parent.name for path in DEMO_DIR.glob("*/alert.json"))
        raise UnknownRunbookError(
            f"no demo incident is bundled for runbook {runbook!r} ({alert_path} is missing); "
            f"demos: {', '.join(bundled) or '(none yet)'}"
        )
    config = session.config()
    archive = session.archive(config)
    records = run_alert(
        read_alert_group(alert_path),
        config=config,
        archive=archive,
        source="demo",
        runbook_id=runbook,
    )
    _report(records, archive, as_json=as_json)


@main.command()
@click.pass_obj
@_handles_errors
def reindex(session: _Session) -> None:
    """Rebuild the index from the run folders.

    Also removes staging folders left over an hour ago by runs that died (a run is only ever
    moved into the archive whole).

    \b
    Example:
      workbook --archive /srv/workbooks/archive reindex
    """
    archive = session.archive()
    count = archive.reindex()
    removed = archive.clean_staging()
    click.echo(
        f"indexed {count} runs in {archive.root}; removed {len(removed)} stale staging folders"
    )


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any but loopback needs WORKBOOKS_WEBHOOK_TOKEN.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=9095, show_default=True)
@click.option(
    "--prometheus",
    metavar="URL",
    help="Prometheus the runs read [default: WORKBOOKS_PROMETHEUS_URL].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Runs at once; 0 accepts and queues only [default: WORKBOOKS_WORKERS, else the cores].",
)
@click.pass_obj
@_handles_errors
def serve(
    session: _Session, host: str, port: int, prometheus: str | None, workers: int | None
) -> None:
    """Run workbooks from Alertmanager's webhook.

    POST /alerts answers 202 at once; each alert group runs each of its runbooks once per
    distinct set of firing alerts, on a pool of workers; runs are archived and summarised to
    WORKBOOKS_NOTIFY. GET /healthz and GET /metrics report on the service. Stops on SIGTERM or
    Ctrl-C. See docs/alertmanager.md for the receiver snippet.

    \b
    Example:
      WORKBOOKS_WEBHOOK_TOKEN=... workbook serve --prometheus http://127.0.0.1:9090
    """
    from workbooks.service import serve as run_service

    config = session.config()
    run_service(
        host=host,
        port=port,
        config=config,
        archive_dir=config.archive_dir,
        prometheus=prometheus,
        workers=workers,
    )


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


@main.command(name="open")
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
@click.option("--baseline", type=Duration(as_text=True), default="1d", show_default=True)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write it [default: ./investigations/TIME-RUNBOOK].",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only (a remote machine).")
@click.option("--port", type=click.IntRange(0, 65535), help="JupyterLab's port; 0: any free one.")
@click.option("--prepare-only", is_flag=True, help="Write the notebook; do not start JupyterLab.")
@click.pass_obj
@_handles_errors
def open_workbook(
    session: _Session,
    runbook: str | None,
    alert_file: str | None,
    at: datetime | None,
    labels: dict[str, str],
    from_run: str | None,
    prometheus: str | None,
    lookback: str,
    baseline: str,
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
    from workbooks.alert import read_alert_group
    from workbooks.investigate import launch_jupyterlab
    from workbooks.investigate import open_workbook as prepare

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


@main.command()
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
@_handles_errors
def report(session: _Session, id: str, format: str) -> None:
    """Render a run's post-mortem report.

    Writes it into the run's folder and prints its path. ID is a run id, or an incident id
    (its newest run). The HTML page stands alone: the summary first, then each section with
    its charts and findings, the code folded away. --format md writes report.md and its charts.

    \b
    Example:
      workbook report 20261128T1405Z-highlatency-3f9a2c1b --format md
    """
    from workbooks.report import render_report

    click.echo(render_report(session.archive(), id, format=format))  # type: ignore[arg-type]


@main.command()
@click.argument("id")
@click.argument("text")
@click.option(
    "--author",
    default=lambda: os.environ.get("USER") or getpass.getuser(),
    show_default="$USER",
    help="Who did it.",
)
@click.pass_obj
@_handles_errors
def note(session: _Session, id: str, text: str, author: str) -> None:
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


@main.group()
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
@_handles_errors
def archive_serve(session: _Session, host: str, port: int) -> None:
    """Browse the archive in a web browser.

    Read-only: incidents newest first with filters and search, each incident's timeline, its
    reports, notebooks and evidence. It has no login: keep it on 127.0.0.1 or behind a proxy.

    \b
    Example:
      workbook archive serve --port 9096
    """
    from workbooks.web import serve_archive

    root = session.archive().root
    click.echo(f"serving {root} at http://{host}:{port}/ (Ctrl-C stops)", err=True)
    serve_archive(root, host=host, port=port)


@archive.command()
@click.option(
    "--older-than", type=Duration(), required=True, help="Age of runs to prune, e.g. 90d."
)
@click.option("--keep-findings", is_flag=True, help="Keep findings and records, mark runs pruned.")
@click.option("--yes", is_flag=True, help="Delete; without it, only say what would go.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
@_handles_errors
def prune(
    session: _Session, older_than: timedelta, keep_findings: bool, yes: bool, as_json: bool
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
@_handles_errors
def stats(session: _Session, as_json: bool) -> None:
    """Incidents, runs, notes, bytes on disk, oldest and newest run.

    \b
    Example:
      workbook archive stats --json
    """
    found = session.archive().stats()
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    _table(found.rows(), ("ARCHIVE", str(found.root)))


def _report(records: Sequence[RunRecord], archive: Archive, *, as_json: bool) -> None:
    """What ran, where the artifact is, the top findings; exit 1 if a run failed."""
    if as_json:
        documents = [archive.show(record.run_id) for record in records]
        shown = documents[0] if len(documents) == 1 else documents
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        for number, record in enumerate(records):
            if number:
                click.echo()
            _describe(record, archive.findings(record), limit=5)
    failed = [record for record in records if record.status == "failed"]
    for record in failed:
        message = (record.error or {}).get("message", "unknown error")
        click.echo(
            f"error: run {record.run_id} failed: {message}; archived all the same in {record.path}",
            err=True,
        )
    if failed:
        sys.exit(EXIT_RUN_FAILED)


def _describe(record: RunRecord, findings: list[Finding], *, limit: int | None) -> None:
    click.echo(
        f"{record.runbook} for {record.alert_name} ({record.severity}, {record.alert_status}): "
        f"{record.status} in {record.duration_seconds:.1f} s"
    )
    click.echo(f"  run       {record.run_id}")
    click.echo(f"  incident  {record.incident_id}")
    click.echo(f"  source    {record.source}")
    click.echo(f"  artifact  {record.path / 'workbook.ipynb'}")
    if record.error:
        click.echo(f"  error     {record.error['kind']}: {record.error['message']}")
    ordered = ranked(findings)
    if not ordered:
        click.echo("  no findings recorded")
    for finding in ordered[:limit]:
        click.echo(f"  {_ICON[finding.severity]} {finding.severity}: {finding.title}")
        if limit is None:
            for extra in (
                finding.detail,
                finding.recommendation and f"next: {finding.recommendation}",
            ):
                if extra:
                    click.echo(f"      {extra}")
    if limit is not None and len(ordered) > limit:
        click.echo(f"  … and {len(ordered) - limit} more (workbook show {record.run_id})")


def _top_finding(record: RunRecord) -> str:
    if record.status == "failed":
        return f"run failed: {(record.error or {}).get('kind', '?')}"
    if record.top_finding_title is None:
        return "no findings"
    return f"{record.top_finding_severity}: {record.top_finding_title}"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())
