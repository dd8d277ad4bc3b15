"""The kernel of one run: started where the run says, watched against the run timeout.

papermill starts the kernel through the manager class it is given; :func:`kernel_manager_class`
makes one per run so each kernel gets its own folder, environment and log, and reports itself to
the run's :class:`Watchdog`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a manager class is made: prelaunch.py must not load it
    from jupyter_client.manager import AsyncKernelManager

# A run's kernel fetches a window and its baseline on threads and writes Parquet evidence: with
# glibc's default of one malloc arena per thread and Arrow's mimalloc pool, memory freed after
# a large answer stayed resident. Two arenas and Arrow on the system allocator (whose freed
# memory the evidence writer hands back) took a 7-day, 1,000-series run's kernel from 496 to
# 430 MB at its peak (benchmarks/week.py). The environment's own values win.
KERNEL_MEMORY_ENV = {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
# A run's cells are its artifact: IPython's history would also keep every run's cells, with
# their alerts, in one SQLite file of the user's (~/.ipython), growing with every incident and
# written by every kernel at once. Nobody debugs a run's kernel: it starts without ipykernel's
# debugger (run_kernel.py). Kernels opened in JupyterLab are not started here.
KERNEL_ARGUMENTS = (
    "--HistoryManager.enabled=False",
    "--IPKernelApp.kernel_class=workbooks.running.run_kernel.RunKernel",
)

# What every runbook's first cell imports, done before the run. The drawer (drawing.py) forks after
# a service kernel's warm-up; in a kernel for one run, after SHARED (it loads matplotlib meanwhile).
PRELOAD = "import pandas, workbooks.notebook.incident, workbooks.runbooks.steps"
SHARED = "import pandas"
DRAWER = "__import__('workbooks.notebook.drawing', fromlist=['start']).start()"
# A kernel for one run (no warm-up) does this as it starts, before any request: imports only,
# so the same code sent again finds it done (about 0.001 s) and tells if it failed.
ONE_RUN_START = f"{SHARED}\n{DRAWER}\n{PRELOAD}"


def kernel_arguments(*, imports_at_start: bool) -> list[str]:
    """The command-line arguments of a run's kernel after its connection file.

    With ``imports_at_start`` the kernel does :data:`ONE_RUN_START` as it starts, before it
    answers any request (:class:`~workbooks.running.run_kernel.RunKernel`), instead of waiting
    for the command to ask: a one-shot command's kernel was ready 0.01 to 0.08 s before the
    command, busy with its own imports, sent it the preload (docs/performance.md).
    """
    arguments = list(KERNEL_ARGUMENTS)
    if imports_at_start:
        arguments.append("--RunKernel.imports_at_start=True")
    return arguments


def kernel_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a run's kernel starts with: ours, then the process's, then ``env``."""
    return {**KERNEL_MEMORY_ENV, **os.environ, **(env or {})}


# After the run deadline the kernel gets SIGINT, so the notebook shows where it was stuck; if
# it is still running this much later (a cell that swallows KeyboardInterrupt, or C code that
# never checks for signals), its whole process group gets SIGKILL.
INTERRUPT_GRACE_SECONDS = 2.0


class Watchdog:
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
            threading.Timer(run_timeout + INTERRUPT_GRACE_SECONDS, self._signal, (signal.SIGKILL,)),
        ]
        for timer in self._timers:
            timer.daemon = True

    def __enter__(self) -> Watchdog:
        for timer in self._timers:
            timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for timer in self._timers:
            timer.cancel()

    @property
    def exit_status(self) -> int | None:
        """How the run's kernel process ended, when a liveness check saw it end (manager.py)."""
        return getattr(self._kernel, "exit_status", None)

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


def kernel_manager_class(
    watchdog: Watchdog, *, cwd: Path, env: Mapping[str, str], log: IO[bytes]
) -> type[AsyncKernelManager]:
    """A kernel manager for one run: its cwd, its environment, its log, its watchdog.

    A class per run because nbclient instantiates the class itself. Starting the kernel in
    ``cwd`` (instead of papermill's ``cwd=``, which ``os.chdir``s the whole process) keeps
    concurrent runs in one process from moving each other's files.
    """

    from workbooks.running.manager import KernelManager

    class RunKernelManager(KernelManager):
        async def start_kernel(self, **kwargs: Any) -> None:  # type: ignore[override]
            kwargs.update(cwd=str(cwd), env=kernel_environment(env), stdout=log, stderr=log)
            kwargs["extra_arguments"] = [*(kwargs.get("extra_arguments") or []), *KERNEL_ARGUMENTS]
            await super().start_kernel(**kwargs)
            watchdog.attach(self)

    return RunKernelManager
