"""The papermill engine every run uses: a kernel given (warm) or started, one notebook write.

papermill is given the kernel through nbclient's ``km=``, via :class:`WarmEngine` (registered
as :data:`ENGINE_NAME`). nbclient leaves a kernel it was handed running, and its client's
channels open; the engine marks the client as owning it, so nbclient shuts both down after the
run exactly as it does for a kernel it started.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from jupyter_client import protocol_version
from jupyter_client.manager import AsyncKernelManager

ENGINE_NAME = "workbooks-warm"
IOPUB_PROBE_SECONDS = 0.02


def connected_client(manager: AsyncKernelManager, *, timeout: float) -> Any:
    """A started client of ``manager``'s running kernel whose IOPub subscription is live.

    nbclient's own client waits with jupyter_client's ``wait_for_ready``, which ends by
    flushing IOPub until it stays silent for 0.2 s: every run paid those 0.2 s, though the
    kernel had long been ready (measured 0.204 s each time, jupyter_client 8.10). Here a
    kernel_info request is repeated every :data:`IOPUB_PROBE_SECONDS` until, after its reply,
    a message reaches IOPub; nothing is flushed, as nbclient reads only the messages of the
    requests it sends. Runs in the calling thread's event loop, the one nbclient uses next.
    """
    from jupyter_core.utils import run_sync

    return run_sync(_connect)(manager, timeout)


async def _connect(manager: AsyncKernelManager, timeout: float) -> Any:
    client = manager.client()
    # No heartbeat channel: the client asks its kernel manager whether the kernel lives
    # (jupyter_client does when the client is the manager's), never the heartbeat. And
    # jupyter_client 8.10's heartbeat thread sets itself running after it starts: a client
    # stopped before that (a run of a few ms on a loaded machine) leaves the thread opening
    # sockets in a loop until the context has no room left ("Too many open files").
    client.start_channels(hb=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            client.kernel_info()
            try:  # as wait_for_ready: a second at a time, so a dead kernel is noticed
                reply = await client.get_shell_msg(timeout=1)
                await client.get_iopub_msg(timeout=IOPUB_PROBE_SECONDS)
                break
            except queue.Empty:
                if not await client.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Kernel didn't respond in {timeout:g} seconds (kernel_info)"
                    ) from None
        # What wait_for_ready does with the reply: speak the kernel's protocol version.
        major = int(reply["content"]["protocol_version"].split(".")[0])
        if major != int(protocol_version.split(".")[0]):
            client.session.adapt_version = major
    except BaseException:
        client.stop_channels()
        raise
    client.allow_stdin = False
    return client


def _expect_queries(client: Any) -> None:
    """Tell the kernel the queries the notebook's cells ask, to fetch them ahead of the cells
    (:mod:`workbooks.notebook.ahead`): one silent request before the first cell."""
    from workbooks.notebook.ahead import expected_queries

    cells = client.nb.cells
    try:
        expected = expected_queries(cell.source for cell in cells if cell.cell_type == "code")
    except Exception as exc:  # never the run's end: each query is then fetched when asked
        logging.getLogger(__name__).warning("the queries were not fetched ahead: %s", exc)
        return
    if expected:  # if it fails, the run goes on: each query is then fetched when asked
        code = f"__import__('workbooks.notebook.ahead', fromlist=['expect']).expect({expected!r})"
        _run_unseen(client, code, failed="the queries were not fetched ahead")


def _deliver_charts(client: Any) -> None:
    """Put the charts still being drawn beside the run in their places (:mod:`.drawing`)."""
    from jupyter_core.utils import run_sync

    from workbooks.notebook.drawing import DELIVER_ALL

    if not run_sync(client.km.is_alive)():  # killed: the charts' places say they were not ready
        return
    _run_unseen(client, DELIVER_ALL, failed="charts drawn beside the run not delivered")


def _run_unseen(client: Any, code: str, *, failed: str) -> None:
    """Run ``code`` in the run's kernel as a cell that is not kept in the notebook; a failure
    (the kernel died meanwhile, the run's timeout passed) is logged as ``failed``."""
    from nbformat.v4 import new_code_cell

    cells = client.nb.cells
    cells.append(new_code_cell(code))  # nbclient puts a cell it ran at its index
    try:
        client.execute_cell(cells[-1], len(cells) - 1, store_history=False)
    except Exception as exc:
        logging.getLogger(__name__).warning("%s: %s", failed, exc)
    finally:
        cells.pop()


def register_engine() -> None:
    """Make :data:`ENGINE_NAME` known to papermill (imports papermill: call where runs happen)."""
    from jupyter_core.utils import run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    class Client(PapermillNotebookClient):  # type: ignore[misc]
        def papermill_execute_cells(self) -> None:
            _expect_queries(self)
            try:
                super().papermill_execute_cells()
            finally:
                _deliver_charts(self)

    class WarmEngine(NBClientEngine):
        """papermill's nbclient engine (2.7's body): a kernel given as ``km=`` (or its own),
        and one notebook write per run instead of two per cell."""

        @classmethod
        def execute_managed_notebook(  # type: ignore[override]
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: float = 60,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout or kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logging.getLogger("papermill"),
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            client = Client(nb_man, **final_kwargs)
            # One run per kernel: nbclient shuts it down after, as it does a kernel it started.
            client.owns_km = True
            # The kernel (given, or started here as nbclient would) gets its client here:
            # nbclient keeps a client it finds, and this one is ready 0.2 s sooner.
            if client.km is None:
                client.km = client.create_kernel_manager()
            if not client.km.has_kernel:
                client.start_new_kernel()
            try:
                client.kc = connected_client(client.km, timeout=start_timeout)
            except BaseException:
                run_sync(client.km.shutdown_kernel)(now=True)
                raise
            # papermill rewrites the whole notebook (charts included) as each cell starts and
            # ends: 50 writes, 1.3 s of this process per high-latency run (cProfile). Only the
            # last write is kept: papermill's notebook_complete() makes it after this returns
            # or raises, so a timed-out or dead run's notebook still says where it stopped.
            save = nb_man.save
            nb_man.save = lambda **kwargs: None
            try:
                return client.execute()
            finally:
                nb_man.save = save

    papermill_engines.register(ENGINE_NAME, WarmEngine)
