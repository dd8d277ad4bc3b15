"""Commands that run workbooks: run, demo, replay, serve, and reading runs back."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click

from workbooks.cli.common import (
    DEMO_DIR,
    Duration,
    _describe,
    _handles_errors,
    _report,
    _Session,
    _table,
    _top_finding,
)
from workbooks.core.errors import (
    ConfigError,
    UnknownRunbookError,
)


@click.command()
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
    from workbooks.core.alert import read_alert_group

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
    from workbooks.running.runner import run_alert  # papermill: imported only when a run is due

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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
@_handles_errors
def runbooks(session: _Session, as_json: bool) -> None:
    """List runbooks and the alerts they handle.

    \b
    Example:
      workbook runbooks --json
    """
    from workbooks.running.routing import load_runbooks

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


@click.command(name="list")
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


@click.command()
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


@click.command()
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
    from workbooks.running import runner

    config = session.config()
    archive = session.archive(config)
    _report([runner.replay(archive, id, config=config)], archive, as_json=as_json)


@click.command()
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
    from workbooks.core.alert import read_alert_group
    from workbooks.running.runner import run_alert

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


@click.command()
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


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any but loopback needs WORKBOOKS_WEBHOOK_TOKEN, and "
    "WORKBOOKS_READER_TOKEN or WORKBOOKS_TRUSTED_USER_HEADER for the archive's pages.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=9095, show_default=True)
@click.option(
    "--prometheus",
    metavar="URL",
    help="Prometheus the runs read, no credentials in it [default: WORKBOOKS_PROMETHEUS_URL].",
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
    from workbooks.service.server import serve as run_service

    config = session.config()
    run_service(
        host=host,
        port=port,
        config=config,
        archive_dir=config.archive_dir,
        prometheus=prometheus,
        workers=workers,
    )
