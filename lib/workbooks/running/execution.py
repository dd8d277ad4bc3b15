"""Run one notebook with papermill, and record how it ended.

Every way a run can end is recorded in an :class:`Execution` rather than raised: a cell that
raised (``exception``), a cell over the cell timeout (``cell-timeout``), a run over the run
timeout (``run-timeout``), a kernel that died (``dead-kernel``), or a notebook that could not be
run at all (``internal``). In every case the output notebook exists afterwards, with whatever
ran and an error banner at the top, so a failed run is archived like any other.
"""

from __future__ import annotations

import html
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from workbooks.core.errors import RunFailedError
from workbooks.core.findings import Finding, summary_markdown
from workbooks.running.engine import ENGINE_NAME, register_engine
from workbooks.running.kernels import Watchdog, kernel_manager_class
from workbooks.running.plugins import plugins_read_once
from workbooks.running.warm import WarmKernel, prepare

with plugins_read_once():  # papermill reads its plugins at import
    import papermill
    from papermill.exceptions import PapermillExecutionError

ErrorKind = Literal["exception", "cell-timeout", "run-timeout", "dead-kernel", "internal"]
ERROR_TAG = "workbooks-error"
_PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
register_engine()


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


def read_ahead(notebook: Path) -> None:
    """Read ``notebook`` as papermill will, before a kernel is taken for it.

    nbformat builds its schema validator at a process's first read (45 ms here): a one-shot
    run does it while its kernel is still starting, not after. A notebook that cannot be read
    is reported by the run itself, as without this.
    """
    try:
        nbformat.read(notebook, as_version=4)
    except Exception:  # the run reads it again and says what is wrong
        return


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
    kernel: WarmKernel | None = None,
) -> Execution:
    """Run ``notebook`` with ``parameters`` into ``output``, in a kernel started in ``cwd``.

    ``env`` is added to this kernel's environment only. ``kernel``, a warm kernel (from a
    :class:`workbooks.running.warm.KernelPool`), is moved to ``cwd`` and ``env`` and used for
    this run, then shut down; without it a kernel is started for the run. Never raises for a
    failed run: the :class:`Execution` says how it ended, and ``output`` holds whatever ran.
    """
    started_at = datetime.now(UTC)
    watchdog = Watchdog(run_timeout)
    exception: BaseException | None = None
    with kernel.log if kernel else tempfile.TemporaryFile() as kernel_log:
        try:
            with watchdog:
                if kernel is None:
                    how: dict[str, Any] = {
                        "kernel_manager_class": kernel_manager_class(
                            watchdog, cwd=Path(cwd).absolute(), env=env or {}, log=kernel_log
                        )
                    }
                else:
                    watchdog.attach(kernel.manager)
                    prepare(kernel, cwd=Path(cwd).absolute(), env=env or {})
                    how = {"km": kernel.manager}
                papermill.execute_notebook(
                    str(notebook),
                    str(output),
                    parameters,
                    kernel_name=kernel_name,
                    progress_bar=False,
                    execution_timeout=cell_timeout,
                    engine_name=ENGINE_NAME,  # nbclient's, with one notebook write per run
                    # The outputs are in once the last cell replied; a graceful shutdown only
                    # waits (measured 0.3-1 s per run) for a kernel whose work is done.
                    shutdown_kernel="immediate",
                    **how,
                )
        except Exception as exc:  # every failure becomes the run's error, never lost
            exception = exc
        finally:
            if kernel is not None:
                kernel.shutdown()  # already done by nbclient unless the run never started
        error = None
        if exception is not None:
            error = _classify(exception, output, watchdog, cell_timeout, _tail(kernel_log))
    finished_at = datetime.now(UTC)
    if error is not None:
        mark_failure(Path(output), error)
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
    exc: BaseException, output: Path, watchdog: Watchdog, cell_timeout: float, kernel_log: str
) -> dict[str, Any]:
    """The run's error record: {kind, ename, evalue, cell_index, message}."""
    notebook = read_notebook(output)
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
        message = f"the kernel died while {where} was running ({_how_ended(watchdog.exit_status)})"
        message += f"; its last words: {kernel_log}" if kernel_log else ""
    else:
        kind, index = "internal", None
        message = f"the notebook could not be run: {ename}: {evalue}"
    return {"kind": kind, "ename": ename, "evalue": evalue, "cell_index": index, "message": message}


def _how_ended(status: int | None) -> str:
    if status is None:  # not seen: the process was gone before a liveness check
        return "it exited, crashed, or ran out of memory"
    if status >= 0:
        return f"its process exited with status {status}"
    name = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
    if -status == signal.SIGKILL:  # what the out-of-memory killer sends
        return (
            f"its process was killed by {name}: most often the out-of-memory killer, when the"
            " machine's or the container's memory ran out; dmesg or the container's events"
            " say so"
        )
    return f"its process was killed by {name}"


def read_notebook(path: Path) -> nbformat.NotebookNode | None:
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


def mark_failure(output: Path, error: dict[str, Any]) -> None:
    """Make the failure impossible to miss in the artifact, whatever papermill wrote."""
    notebook = read_notebook(output) or nbformat.v4.new_notebook()
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
    notebook = read_notebook(notebook_path) or nbformat.v4.new_notebook()
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
