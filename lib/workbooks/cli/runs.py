"""Commands that run workbooks: run, demo, replay, serve, and reading runs back."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from workbooks.cli.common import (
    Duration,
    Session,
    describe,
    handles_errors,
    report_runs,
    run_json,
    table,
    top_finding,
)
from workbooks.core.errors import UnknownRunbookError
from workbooks.core.paths import DEMO_ALERT_FILE, bundled_demos, demo_dir

if TYPE_CHECKING:
    from workbooks.core.config import Config
    from workbooks.running.warm import KernelPool


def warm_kernel() -> KernelPool:
    """One kernel, started (with its imports) before the config, the archive and papermill.

    A one-shot command pays its own imports and the config (about 1.3 s) and the kernel's start
    and imports (about 2.4 s) one after the other otherwise; started first, the kernel does its
    part while this process does its own. Its process is started before jupyter_client is
    imported (prelaunch.py), else the pool's start is waited for, so the command's imports do
    not slow it. Bad input found after this (a malformed alert, an unknown run) stops the kernel
    at once on the way out.
    """
    from workbooks.running.prelaunch import prelaunch

    first = prelaunch()
    try:
        from workbooks.running.warm import KernelPool

        pool = KernelPool(1, runs=1, prelaunched=first)
    except BaseException:
        if first is not None:
            first.discard()
        raise
    pool.wait_launched()
    return pool


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
@click.option(
    "--baseline",
    type=Duration(as_text=True),
    default=None,
    help="Default: the runbook's own (metadata.workbooks.baseline), else 1d.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (a list if several).")
@click.pass_obj
@handles_errors
def run(
    session: Session,
    runbook: str | None,
    alert_file: str,
    prometheus: str | None,
    evidence: Path | None,
    lookback: str,
    baseline: str | None,
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
    if prometheus and evidence:
        raise click.UsageError("pass --prometheus or --evidence, not both")
    with warm_kernel() as kernels:
        from workbooks.core.alert import read_alert_group  # pydantic: after the kernel's start
        from workbooks.notebook.source_spec import choose_source

        group = read_alert_group(alert_file)
        config = session.config()
        source = choose_source(url=prometheus, evidence=evidence, settings=config.prometheus)
        archive = session.archive(config)
        from workbooks.running.runner import run_alert  # papermill: only when a run is due

        records = run_alert(
            group,
            config=config,
            archive=archive,
            source=source,
            kernels=kernels,
            runbook_id=runbook,
            lookback=lookback,
            baseline=baseline,
        )
    report_runs(records, archive, as_json=as_json)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
@handles_errors
def runbooks(session: Session, as_json: bool) -> None:
    """List runbooks and what routes to them.

    An alert goes to the runbook named by its `runbook` label, else by the last segment of its
    `runbook_url` annotation, else by the config file's `routing:` rules (ROUTING), else by its
    alertname (ALERTS, from the notebooks).

    \b
    Example:
      workbook runbooks --config workbooks.yaml --json
    """
    from workbooks.running.routing import configured_runbooks

    found = configured_runbooks(session.config())
    ordered = sorted(found.values(), key=lambda r: (r.group, r.id))
    if as_json:
        rows = [
            {
                "id": runbook.id,
                "title": runbook.title,
                "group": runbook.group,
                "alerts": list(runbook.alerts),
                "routing": [rule.match for rule in found.rules_for(runbook.id)],
                "summary": runbook.summary,
            }
            for runbook in ordered
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table(
        [
            (
                runbook.id,
                runbook.group,
                ", ".join(runbook.alerts),
                "; ".join(rule.describe() for rule in found.rules_for(runbook.id)) or "-",
                runbook.summary,
            )
            for runbook in ordered
        ],
        ("RUNBOOK", "GROUP", "ALERTS", "ROUTING", "SUMMARY"),
    )


@click.command(name="list")
@click.option("--runbook", help="Only runs of this runbook.")
@click.option("--since", type=Duration(), help="Only runs started this recently, e.g. 7d.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the run records as a JSON list.")
@click.pass_obj
@handles_errors
def list_runs(
    session: Session, runbook: str | None, since: timedelta | None, limit: int, as_json: bool
) -> None:
    """List archived runs, newest first.

    \b
    Example:
      workbook list --runbook high-latency --since 7d
    """
    archive = session.archive()
    records = archive.runs(runbook=runbook, since=since, limit=limit)
    if as_json:
        click.echo(json.dumps([run_json(record) for record in records], indent=2))
        return
    if not records:
        click.echo(f"no runs in {archive.root}", err=True)
        return
    table(
        [
            (
                f"{record.started_at:%Y-%m-%d %H:%M}",
                record.status,
                record.run_id,
                record.incident_id,
                top_finding(record),
            )
            for record in records
        ],
        ("STARTED (UTC)", "STATUS", "RUN", "INCIDENT", "TOP FINDING"),
    )


@click.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its findings as JSON.")
@click.pass_obj
@handles_errors
def show(session: Session, id: str, as_json: bool) -> None:
    """Show a run's findings. ID is a run id, or an incident id (its newest run).

    \b
    Example:
      workbook show 20261128T1405Z-highlatency-3f9a2c1b --json
    """
    archive = session.archive()
    record = archive.get(id)
    if as_json:
        document = run_json(record, archive.findings(record))
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    describe(record, archive.findings(record), limit=None)


@click.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="Print the new run as JSON.")
@click.pass_obj
@handles_errors
def replay(session: Session, id: str, as_json: bool) -> None:
    """Re-run an archived run from its evidence.

    The same runbook on the same alert, reading the run's saved evidence instead of Prometheus:
    a new run of the same incident.

    \b
    Example:
      workbook replay 20261128T140507Z-high-latency
    """
    with warm_kernel() as kernels:
        config = session.config()
        archive = session.archive(config)
        archive.get(id)  # an unknown id fails now, before papermill is imported
        from workbooks.running import runner

        record = runner.replay(archive, id, config=config, kernels=kernels)
    report_runs([record], archive, as_json=as_json)


@click.command()
@click.argument("runbook", default="high-latency")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_obj
@handles_errors
def demo(session: Session, runbook: str, as_json: bool) -> None:
    """Run a runbook on its bundled demo incident.

    Offline: the demo evidence stands in for Prometheus. The run is archived like any other.

    \b
    Example:
      workbook demo high-latency
    """
    alert_path = demo_dir(runbook) / DEMO_ALERT_FILE
    if not alert_path.is_file():
        raise UnknownRunbookError(
            f"no demo incident is bundled for runbook {runbook!r} ({alert_path} is missing); "
            f"demos: {', '.join(bundled_demos()) or '(none yet)'}"
        )
    with warm_kernel() as kernels:
        from workbooks.core.alert import read_alert_group  # pydantic: after the kernel's start
        from workbooks.notebook.source_spec import DEMO_SOURCE

        config = session.config()
        archive = session.archive(config)
        from workbooks.running.runner import run_alert

        records = run_alert(
            read_alert_group(alert_path),
            config=config,
            archive=archive,
            source=DEMO_SOURCE,
            kernels=kernels,
            runbook_id=runbook,
        )
    report_runs(records, archive, as_json=as_json)


@click.command()
@click.pass_obj
@handles_errors
def reindex(session: Session) -> None:
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
        f"indexed {count} runs in {archive.location}; removed {len(removed)} stale staging folders"
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
@click.option(
    "--role",
    type=click.Choice(["all", "intake"]),
    default="all",
    show_default=True,
    help="all: accept and run; intake: accept and queue only, for `workbook worker` processes.",
)
@click.option("--redis", metavar="URL", help="Queue on Redis [default: WORKBOOKS_REDIS_URL].")
@click.pass_obj
@handles_errors
def serve(
    session: Session,
    host: str,
    port: int,
    prometheus: str | None,
    workers: int | None,
    role: str,
    redis: str | None,
) -> None:
    """Run workbooks from Alertmanager's webhook.

    POST /alerts answers 202 at once; each alert group runs each of its runbooks once per
    distinct set of firing alerts, on a pool of workers; runs are archived and summarised to
    WORKBOOKS_NOTIFY. GET /healthz and GET /metrics report on the service. Stops on SIGTERM or
    Ctrl-C. See docs/alertmanager.md for the receiver snippet.

    With --role intake it runs no workbook: `workbook worker` processes, on this host or
    others, run what it queues on Redis (docs/scale.md).

    \b
    Example:
      WORKBOOKS_WEBHOOK_TOKEN=... workbook serve --prometheus http://127.0.0.1:9090
      workbook serve --role intake --redis redis://queue:6379/0 --prometheus http://prom:9090
    """
    from workbooks.service.server import serve as run_service

    config = _with_redis(session.config(), redis)
    run_service(
        host=host,
        port=port,
        config=config,
        archive_dir=config.archive_url or config.archive_dir,
        prometheus=prometheus,
        workers=workers,
        role="intake" if role == "intake" else "all",
    )


@click.command()
@click.option("--redis", metavar="URL", help="The shared queue [default: WORKBOOKS_REDIS_URL].")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Runs at once in this process [default: WORKBOOKS_WORKERS, else the cores].",
)
@click.option("--name", help="This worker's name in run records and logs [default: its pid].")
@click.pass_obj
@handles_errors
def worker(session: Session, redis: str | None, workers: int | None, name: str | None) -> None:
    """Run the workbooks intake queued on Redis.

    Takes the runs `workbook serve --role intake` queued on Redis, runs them and archives each
    (a folder, or s3://bucket/prefix with WORKBOOKS_DATABASE_URL for the shared ledger). Runs
    of a worker that died are taken over. Stops on SIGTERM or Ctrl-C, letting runs finish.

    \b
    Example:
      WORKBOOKS_REDIS_URL=redis://queue:6379/0 workbook worker --name worker-a
    """
    from workbooks.service.server import work

    config = _with_redis(session.config(), redis)
    work(
        config=config,
        archive_dir=config.archive_url or config.archive_dir,
        workers=workers,
        name=name,
    )


def _with_redis(config: Config, redis: str | None) -> Config:
    if not redis:
        return config
    service = config.service.model_copy(update={"redis_url": redis})
    return config.model_copy(update={"service": service})
