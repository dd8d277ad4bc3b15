"""Run the runbooks an alert routes to, and archive each run, failed or not.

How one notebook runs (papermill, the kernel, the timeouts, the error banner) is
:mod:`workbooks.running.execution`; this module turns alerts into runs and runs into archive
folders, and replays archived runs from their evidence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workbooks.archive.store import (
    ALERT_FILE,
    EVIDENCE_DIR,
    NOTEBOOK_FILE,
    Archive,
    RunRecord,
    incident_id,
)
from workbooks.core.alert import Alert, AlertGroup, parse_alert_group
from workbooks.core.config import Config, find_config_file
from workbooks.core.errors import ArchiveError, UnknownRunbookError
from workbooks.core.findings import Finding, findings_from_notebook, ranked
from workbooks.core.redact import redact_url, refuse_credentials
from workbooks.notebook.source_spec import CONFIGURED_PROMETHEUS, archived_source
from workbooks.running.execution import (
    Execution,
    execute_notebook,
    fill_summary,
    mark_failure,
    read_ahead,
    read_notebook,
)
from workbooks.running.parameters import DEFAULT_BASELINE, Parameters
from workbooks.running.routing import Route, Runbook, configured_runbooks, route
from workbooks.running.warm import KernelPool


def workbook_parameters(
    runbook: Runbook,
    alerts: Sequence[Alert],
    group: AlertGroup,
    *,
    source: str,
    lookback: str = "2h",
    baseline: str | None = None,
) -> dict[str, Any]:
    """The parameters every runbook takes (DESIGN.md), from the alerts routed to it.

    ``baseline`` None means the runbook's own default (its metadata), else ``DEFAULT_BASELINE``.
    """
    if not alerts:
        raise ValueError(f"no alerts routed to runbook {runbook.id}")
    refuse_credentials(source)  # parameters are written into the archived notebook
    chosen = baseline or runbook.baseline or DEFAULT_BASELINE
    return Parameters.from_alerts(
        alerts, group, source=source, lookback=lookback, baseline=chosen
    ).to_dict()


def run_alert(
    group: AlertGroup,
    *,
    config: Config,
    archive: Archive,
    source: str,
    kernels: KernelPool | None = None,
    runbook_id: str | None = None,
    lookback: str = "2h",
    baseline: str | None = None,
) -> list[RunRecord]:
    """Run every runbook the group routes to and archive each run, failed or not.

    Bad input (no runbook for an alertname, credentials in ``source``) raises before anything is
    archived. After that, whatever happens inside one run is archived as that run's error.
    ``kernels`` gives each run a warm kernel; without it each run starts its own.
    """
    routes = route(group, configured_runbooks(config), runbook_id=runbook_id)
    planned = []
    for each in routes:
        parameters = workbook_parameters(
            each.runbook, each.alerts, group, source=source, lookback=lookback, baseline=baseline
        )
        planned.append((each, parameters))
    return [
        _run_route(each, parameters, group, config=config, archive=archive, kernels=kernels)
        for each, parameters in planned
    ]


def _run_route(
    planned: Route,
    parameters: dict[str, Any],
    group: AlertGroup,
    *,
    config: Config,
    archive: Archive,
    kernels: KernelPool | None = None,
) -> RunRecord:
    runbook = planned.runbook
    runbook_hash = runbook.content_hash  # the version that runs, even if edited meanwhile
    staging = archive.stage()
    notebook = staging / NOTEBOOK_FILE
    started_at = datetime.now(UTC)
    findings: list[Finding] = []
    with ExitStack() as run_going:
        try:
            (staging / ALERT_FILE).write_text(
                json.dumps(group.to_payload(), indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8",
            )
            read_ahead(runbook.path)  # while a one-shot run's kernel starts
            # The pool holds back a replacement kernel until the run is archived.
            kernel = run_going.enter_context(kernels.lease()) if kernels is not None else None
            execution = execute_notebook(
                runbook.path,
                notebook,
                parameters,
                cwd=staging,
                cell_timeout=config.cell_timeout_seconds,
                run_timeout=config.run_timeout_seconds,
                env=_kernel_environment(staging),
                kernel=kernel,
            )
            executed = read_notebook(notebook)
            findings = ranked(findings_from_notebook(executed)) if executed else []
            fill_summary(notebook, findings, execution)
        except Exception as exc:  # a bug here must not lose the run: archive it as failed
            ename, evalue = type(exc).__name__, str(exc)
            error = {"kind": "internal", "ename": ename, "evalue": evalue, "cell_index": None}
            error["message"] = f"the runner failed: {ename}: {evalue}"
            execution = Execution(
                status="failed",
                error=error,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                exception=exc,
            )
            if not notebook.exists():
                mark_failure(notebook, error)
        first = planned.alerts[0]
        record = RunRecord(
            incident_id=incident_id(group.group_key, group.starts_at, _incident_alertname(group)),
            runbook=runbook.id,
            runbook_hash=runbook_hash,
            status=execution.status,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            duration_seconds=round(execution.duration_seconds, 3),
            source=_recorded_source(parameters["source"], config),
            alert_name=parameters["alert_name"],
            severity=parameters["severity"],
            service=first.labels.get("service"),
            alert_status=parameters["status"],
            labels=parameters["labels"],
            error=execution.error,
            group_key=group.group_key,
            alert_starts_at=group.starts_at,
            lookback=parameters["lookback"],
            baseline=parameters["baseline"],
        ).with_findings(findings)
        return archive.commit(staging, record, findings)  # the archive writes findings.json


def _recorded_source(source: str, config: Config) -> str:
    """What the notebook read: ``prometheus`` names the configured URL (without credentials)."""
    if source != CONFIGURED_PROMETHEUS or not config.prometheus.url:
        return redact_url(source)
    return redact_url(config.prometheus.url)


def _incident_alertname(group: AlertGroup) -> str:
    # The alert that started the incident names it, as its start time dates it.
    earliest = min(group.alerts, key=lambda alert: (alert.starts_at, alert.name))
    return earliest.name


def _kernel_environment(staging: Path) -> dict[str, str]:
    """What this run's kernel adds to our environment.

    The kernel's cwd is the run folder, so the config file we read is passed to it by its
    absolute path for the notebook to read the same settings.
    """
    env = {"WORKBOOKS_EVIDENCE_DIR": str(staging / EVIDENCE_DIR)}
    if (config_file := find_config_file()) is not None:
        env["WORKBOOKS_CONFIG"] = str(config_file)
    return env


def replay(
    archive: Archive, run_id: str, *, config: Config, kernels: KernelPool | None = None
) -> RunRecord:
    """Run an archived run's runbook again on its alert, from its saved evidence."""
    original = archive.get(run_id)
    source = archived_source(
        original.path / EVIDENCE_DIR,
        recorded=original.source,
        instead=f"run {original.run_id} cannot be replayed: run its alert again against "
        f"Prometheus with `workbook run --alert {original.path / ALERT_FILE}`",
    )
    try:
        group = parse_alert_group((original.path / ALERT_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArchiveError(f"cannot read the alert of run {original.run_id}: {exc}") from exc
    runbooks = configured_runbooks(config)
    # The same alerts as the original run: those routed to its runbook, else (it was named
    # explicitly) all of them.
    try:
        routes = [each for each in route(group, runbooks) if each.runbook.id == original.runbook]
    except UnknownRunbookError:
        routes = []
    chosen = routes[0] if routes else route(group, runbooks, runbook_id=original.runbook)[0]
    parameters = workbook_parameters(
        chosen.runbook,
        chosen.alerts,
        group,
        source=source,
        lookback=original.lookback,
        baseline=original.baseline,
    )
    return _run_route(chosen, parameters, group, config=config, archive=archive, kernels=kernels)
