"""Run a runbook notebook for an alert with papermill, and archive what came out.

Every way a run can end is recorded in an :class:`Execution` rather than raised: a cell that
raised (``exception``), a cell over the cell timeout (``cell-timeout``), a run over the run
timeout (``run-timeout``), a kernel that died (``dead-kernel``), or a notebook that could not be
run at all (``internal``). In every case the output notebook exists afterwards, with whatever
ran and an error banner at the top, so a failed run is archived like any other.
"""

from __future__ import annotations

import html
import json
import os
import signal
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError

from workbooks.archive.store import (
    ALERT_FILE,
    EVIDENCE_DIR,
    NOTEBOOK_FILE,
    Archive,
    RunRecord,
    incident_id,
)
from workbooks.core.alert import Alert, AlertGroup, parse_alert_group
from workbooks.core.config import Config
from workbooks.core.errors import ArchiveError, RunFailedError, UnknownRunbookError
from workbooks.core.findings import Finding, findings_from_notebook, ranked, summary_markdown
from workbooks.core.redact import redact_url, refuse_credentials
from workbooks.running.parameters import Parameters
from workbooks.running.routing import Route, Runbook, load_runbooks, route

ErrorKind = Literal["exception", "cell-timeout", "run-timeout", "dead-kernel", "internal"]
ERROR_TAG = "workbooks-error"
_PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
# After the run deadline the kernel gets SIGINT, so the notebook shows where it was stuck; if
# it is still running this much later (a cell that swallows KeyboardInterrupt, or C code that
# never checks for signals), its whole process group gets SIGKILL.
_INTERRUPT_GRACE_SECONDS = 2.0


@dataclass(frozen=True, kw_only=True)
class Execution:
    """How one notebook run ended. ``error`` is None or the dict a :class:`RunRecord` holds."""

    status: Literal["succeeded", "failed"]
    error: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def raise_for_status(self) -> None:
        """Raise :class:`RunFailedError` (from the original error) if the run failed."""
        if self.error is not None:
            raise RunFailedError(self.error["message"]) from self.exception


class _Watchdog:
    """Ends a run that outlives ``run_timeout``, whatever its cells do.

    papermill runs in the calling thread, so tracebacks and Ctrl-C behave as usual; two timer
    threads signal the kernel's process group. At the deadline SIGINT: the running cell raises
    KeyboardInterrupt, so the artifact shows the line it was stuck on, and papermill returns
    about 0.4 s later (measured, median of 3). A cell that ignores SIGINT, or C code that never
    checks for it, gets SIGKILL after the grace period; nbclient sees the dead kernel on its
    next liveness check (measured: back 2.25 s after the deadline, grace 2 s). Signals, not the
    kernel manager's methods, because those are coroutines bound to papermill's event loop.
    """

    def __init__(self, run_timeout: float) -> None:
        self.run_timeout = run_timeout
        self.fired = False
        self._lock = threading.Lock()
        self._kernel: AsyncKernelManager | None = None
        self._timers = [
            threading.Timer(run_timeout, self._signal, (signal.SIGINT,)),
            threading.Timer(
                run_timeout + _INTERRUPT_GRACE_SECONDS, self._signal, (signal.SIGKILL,)
            ),
        ]
        for timer in self._timers:
            timer.daemon = True

    def __enter__(self) -> _Watchdog:
        for timer in self._timers:
            timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for timer in self._timers:
            timer.cancel()

    def attach(self, kernel: AsyncKernelManager) -> None:
        with self._lock:
            self._kernel = kernel
        if self.fired:  # the deadline passed while the kernel was starting
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with self._lock:
            self.fired = True
            process = getattr(self._kernel.provisioner, "process", None) if self._kernel else None
            # poll() is None: not yet reaped, so its pid (and process group) is still its own.
            if process is None or process.poll() is not None:
                return
            try:
                os.killpg(process.pid, signum)
            except OSError:
                process.send_signal(signum)


def _kernel_manager_class(
    watchdog: _Watchdog, *, cwd: Path, env: Mapping[str, str], log: IO[bytes]
) -> type[AsyncKernelManager]:
    """A kernel manager for one run: its cwd, its environment, its log, its watchdog.

    A class per run because nbclient instantiates the class itself. Starting the kernel in
    ``cwd`` (instead of papermill's ``cwd=``, which ``os.chdir``s the whole process) keeps
    concurrent runs in one process from moving each other's files.
    """

    class RunKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            kwargs.update(cwd=str(cwd), env={**os.environ, **env}, stdout=log, stderr=log)
            await super().start_kernel(**kwargs)
            watchdog.attach(self)

    return RunKernelManager


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: dict[str, Any],
    *,
    cwd: Path,
    cell_timeout: float,
    run_timeout: float,
    kernel_name: str = "python3",
    env: Mapping[str, str] | None = None,
) -> Execution:
    """Run ``notebook`` with ``parameters`` into ``output``, in a kernel started in ``cwd``.

    ``env`` is added to this kernel's environment only. Never raises for a failed run: the
    :class:`Execution` says how it ended, and ``output`` holds whatever ran.
    """
    started_at = datetime.now(UTC)
    watchdog = _Watchdog(run_timeout)
    exception: BaseException | None = None
    with tempfile.TemporaryFile() as kernel_log:
        try:
            with watchdog:
                papermill.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters,
                    kernel_name=kernel_name,
                    progress_bar=False,
                    execution_timeout=cell_timeout,
                    kernel_manager_class=_kernel_manager_class(
                        watchdog, cwd=Path(cwd).absolute(), env=env or {}, log=kernel_log
                    ),
                )
        except Exception as exc:  # every failure becomes the run's error, never lost
            exception = exc
        error = None
        if exception is not None:
            error = _classify(exception, output, watchdog, cell_timeout, _tail(kernel_log))
    finished_at = datetime.now(UTC)
    if error is not None:
        _mark_failure(Path(output), error)
    return Execution(
        status="failed" if error else "succeeded",
        error=error,
        started_at=started_at,
        finished_at=finished_at,
        exception=exception,
    )


def _tail(log: IO[bytes], lines: int = 5) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and "running over TCP" not in line]
    return "\n".join(kept[-lines:])


def _classify(
    exc: BaseException, output: Path, watchdog: _Watchdog, cell_timeout: float, kernel_log: str
) -> dict[str, Any]:
    """The run's error record: {kind, ename, evalue, cell_index, message}."""
    notebook = _read_notebook(output)
    index = _running_cell(notebook) if notebook else None
    where = _cell_name(notebook, index)
    kind: ErrorKind
    ename, evalue = type(exc).__name__, str(exc)
    if watchdog.fired:  # whatever the kill looked like to papermill
        kind, ename, evalue = "run-timeout", "RunTimeout", f"ran over {watchdog.run_timeout:g} s"
        message = (
            f"the run was stopped after {watchdog.run_timeout:g} s (the run timeout) while "
            f"{where} was running; later cells did not run"
        )
    elif isinstance(exc, PapermillExecutionError):
        kind, ename, evalue, index = "exception", exc.ename, exc.evalue, exc.cell_index
        message = f"{_cell_name(notebook, index)} raised {ename}: {evalue}"
    elif isinstance(exc, CellTimeoutError):
        kind, evalue = "cell-timeout", f"cell ran longer than {cell_timeout:g} s"
        message = f"{where} timed out after {cell_timeout:g} s (the cell timeout)"
    elif isinstance(exc, DeadKernelError):
        kind = "dead-kernel"
        message = (
            f"the kernel died while {where} was running (it exited, crashed, or ran out of memory)"
        )
        message += f"; its last words: {kernel_log}" if kernel_log else ""
    else:
        kind, index = "internal", None
        message = f"the notebook could not be run: {ename}: {evalue}"
    return {"kind": kind, "ename": ename, "evalue": evalue, "cell_index": index, "message": message}


def _read_notebook(path: Path) -> nbformat.NotebookNode | None:
    try:
        return nbformat.read(str(path), as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError):
        return None


def _running_cell(notebook: nbformat.NotebookNode) -> int | None:
    """The cell papermill last started (later cells keep ``start_time`` None)."""
    started = [
        index
        for index, cell in enumerate(_run_cells(notebook))
        if cell.metadata.get("papermill", {}).get("start_time")
    ]
    return started[-1] if started else None


def _run_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cells as run, without the error banners papermill or this module put in."""
    return [cell for cell in notebook.cells if not _is_banner(cell)]


def _is_banner(cell: nbformat.NotebookNode) -> bool:
    return bool({ERROR_TAG, _PAPERMILL_ERROR_TAG} & set(cell.metadata.get("tags", [])))


def _cell_name(notebook: nbformat.NotebookNode | None, index: int | None) -> str:
    if notebook is None or index is None:
        return "no cell"
    cells = _run_cells(notebook)
    count = cells[index].get("execution_count") if index < len(cells) else None
    return f"cell {index}" + (f" (In [{count}])" if count else "")


def _mark_failure(output: Path, error: dict[str, Any]) -> None:
    """Make the failure impossible to miss in the artifact, whatever papermill wrote."""
    notebook = _read_notebook(output) or nbformat.v4.new_notebook()
    papermill_meta = notebook.metadata.setdefault("papermill", {})
    papermill_meta["exception"] = True
    if error["kind"] == "exception":
        # papermill already put its banner and anchor in, and flagged the cell.
        _write_notebook(notebook, output)
        return
    cells = _run_cells(notebook)
    index = error["cell_index"]
    if index is not None and index < len(cells):
        cell_meta = cells[index].metadata.setdefault("papermill", {})
        cell_meta.update(exception=True, status="failed")
        for later in cells[index + 1 :]:
            # papermill marked these "completed" when it did not know the run had failed.
            if not later.metadata.get("papermill", {}).get("start_time"):
                later.metadata.setdefault("papermill", {})["status"] = "pending"
        anchor = nbformat.v4.new_markdown_cell(
            '<span id="workbooks-error-cell" style="color:red; font-size:1.5em;">'
            "The run stopped here:</span>"
        )
        anchor.metadata["tags"] = [ERROR_TAG]
        cells.insert(index, anchor)
    link = ' <a href="#workbooks-error-cell">Go to the cell.</a>' if index is not None else ""
    banner = nbformat.v4.new_markdown_cell(
        f'<span style="color:red; font-size:1.5em;">Run failed ({error["kind"]}): '
        f"{html.escape(error['message'])}.</span>{link}"
    )
    banner.metadata["tags"] = [ERROR_TAG]
    notebook.cells = [banner, *cells]
    _write_notebook(notebook, output)


def _write_notebook(notebook: nbformat.NotebookNode, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    nbformat.write(notebook, str(partial))
    os.replace(partial, path)


def fill_summary(notebook_path: Path, findings: Sequence[Finding], execution: Execution) -> None:
    """Put the top findings and how the run ended into the notebook's Summary cell."""
    notebook = _read_notebook(notebook_path) or nbformat.v4.new_notebook()
    heading, _, body = summary_markdown(findings).partition("\n\n")
    if execution.error is None:
        status = f"**Run succeeded** in {execution.duration_seconds:.1f} s."
        text = f"{heading}\n\n{body}\n\n{status}"
    else:
        status = (
            f"**⛔ Run failed ({execution.error['kind']}):** "
            f"{html.escape(execution.error['message'])}. "
            "The findings below are those recorded before it stopped."
        )
        text = f"{heading}\n\n{status}\n\n{body}"
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and "summary" in cell.metadata.get("tags", []):
            cell.source = text
            break
    else:
        cell = nbformat.v4.new_markdown_cell(text)
        cell.metadata["tags"] = ["summary"]
        first = next(
            (index for index, each in enumerate(notebook.cells) if not _is_banner(each)),
            len(notebook.cells) - 1,
        )
        notebook.cells.insert(first + 1, cell)
    _write_notebook(notebook, Path(notebook_path))


def workbook_parameters(
    runbook: Runbook,
    alerts: Sequence[Alert],
    group: AlertGroup,
    *,
    source: str,
    lookback: str = "2h",
    baseline: str = "1d",
) -> dict[str, Any]:
    """The parameters every runbook takes (DESIGN.md), from the alerts routed to it."""
    if not alerts:
        raise ValueError(f"no alerts routed to runbook {runbook.id}")
    refuse_credentials(source)  # parameters are written into the archived notebook
    return Parameters.from_alerts(
        alerts, group, source=source, lookback=lookback, baseline=baseline
    ).to_dict()


def run_alert(
    group: AlertGroup,
    *,
    config: Config,
    archive: Archive,
    source: str,
    runbook_id: str | None = None,
    lookback: str = "2h",
    baseline: str = "1d",
) -> list[RunRecord]:
    """Run every runbook the group routes to and archive each run, failed or not.

    Bad input (no runbook for an alertname, credentials in ``source``) raises before anything is
    archived. After that, whatever happens inside one run is archived as that run's error.
    """
    routes = route(group, load_runbooks(config.notebooks_dir), runbook_id=runbook_id)
    planned = []
    for each in routes:
        parameters = workbook_parameters(
            each.runbook, each.alerts, group, source=source, lookback=lookback, baseline=baseline
        )
        planned.append((each, parameters))
    return [
        _run_route(each, parameters, group, config=config, archive=archive)
        for each, parameters in planned
    ]


def _run_route(
    planned: Route,
    parameters: dict[str, Any],
    group: AlertGroup,
    *,
    config: Config,
    archive: Archive,
) -> RunRecord:
    runbook = planned.runbook
    runbook_hash = runbook.content_hash  # the version that runs, even if edited meanwhile
    staging = archive.stage()
    notebook = staging / NOTEBOOK_FILE
    started_at = datetime.now(UTC)
    findings: list[Finding] = []
    try:
        (staging / ALERT_FILE).write_text(
            json.dumps(group.to_payload(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        execution = execute_notebook(
            runbook.path,
            notebook,
            parameters,
            cwd=staging,
            cell_timeout=config.cell_timeout_seconds,
            run_timeout=config.run_timeout_seconds,
            env=_kernel_environment(staging),
        )
        executed = _read_notebook(notebook)
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
            _mark_failure(notebook, error)
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
    if source != "prometheus" or not config.prometheus.url:
        return source
    return redact_url(config.prometheus.url)


def _incident_alertname(group: AlertGroup) -> str:
    # The alert that started the incident names it, as its start time dates it.
    earliest = min(group.alerts, key=lambda alert: (alert.starts_at, alert.name))
    return earliest.name


def _kernel_environment(staging: Path) -> dict[str, str]:
    """What this run's kernel adds to our environment.

    The kernel's cwd is the run folder, so a config file found relative to ours must be
    passed to it as an absolute path for the notebook to read the same settings.
    """
    env = {"WORKBOOKS_EVIDENCE_DIR": str(staging / EVIDENCE_DIR)}
    config_file = os.environ.get("WORKBOOKS_CONFIG") or (
        "workbooks.yaml" if Path("workbooks.yaml").is_file() else None
    )
    if config_file:
        env["WORKBOOKS_CONFIG"] = str(Path(config_file).absolute())
    return env


def replay(archive: Archive, run_id: str, *, config: Config) -> RunRecord:
    """Run an archived run's runbook again on its alert, from its saved evidence."""
    original = archive.get(run_id)
    evidence = original.path / EVIDENCE_DIR
    if evidence.is_dir():
        source = str(evidence.absolute())
    elif original.source == "demo":
        source = "demo"
    else:
        raise ArchiveError(
            f"run {original.run_id} saved no evidence ({evidence} is missing), so it cannot be "
            "replayed; run it again against Prometheus with `workbook run`"
        )
    try:
        group = parse_alert_group((original.path / ALERT_FILE).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArchiveError(f"cannot read the alert of run {original.run_id}: {exc}") from exc
    runbooks = load_runbooks(config.notebooks_dir)
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
    return _run_route(chosen, parameters, group, config=config, archive=archive)
