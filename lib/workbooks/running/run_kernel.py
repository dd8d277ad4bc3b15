"""The kernel a run gets: IPython's own, without the debugger, drawing its charts beside its
cells (:mod:`workbooks.notebook.drawing`).

ipykernel imports debugpy and sets up its debugger in every kernel it starts, for JupyterLab's
debugging panel. A run's kernel executes a notebook under papermill and is shut down: nobody
attaches a debugger to it, and that set-up was 0.3 to 0.7 s of every kernel's start on a loaded
2-core machine (median of 6 interleaved starts, 2.86 -> 2.11 s; docs/performance.md), on the
path of every cold run and of every test that runs a workbook. With debugpy unimportable in the
kernel's process, ipykernel starts the kernel as it does where debugpy is not installed.

Only the kernels started by :mod:`workbooks.running` load this module (``KERNEL_ARGUMENTS``);
kernels opened in JupyterLab keep their debugger.
"""

from __future__ import annotations

import contextlib
import gc
import sys

sys.modules.setdefault("debugpy", None)  # type: ignore[arg-type]  # import debugpy: ImportError

from typing import Any  # noqa: E402

from ipykernel.ipkernel import IPythonKernel  # noqa: E402  (after the line above, on purpose)
from traitlets import Bool  # noqa: E402

from workbooks.notebook import drawing  # noqa: E402
from workbooks.running.kernels import ONE_RUN_START  # noqa: E402


class RunKernel(IPythonKernel):
    """IPython's kernel; the class is ours so that loading it keeps debugpy out, and so that
    a run's charts are drawn beside its cells (:mod:`workbooks.notebook.drawing`)."""

    imports_at_start = Bool(
        False,
        help="Do a one-run kernel's imports (ONE_RUN_START) as it starts, before any request.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        drawing.enable(self.shell)

    def start(self) -> None:
        if self.imports_at_start:
            _imports_at_start()
        super().start()


def _imports_at_start() -> None:
    """pandas, the chart drawer's fork, the package; then all that is frozen for the collector.

    The collector is off meanwhile: the imports make tens of thousands of objects that live as
    long as the kernel, and collecting while they are made scanned them again and again (a
    cold high-error-rate run's kernel, ``gc.callbacks``: 269 collections, 54-65 ms, before; 111,
    13 ms, after). Frozen after (the drawer's fork freezes what the kernel holds by then, too),
    no later collection scans them. A failed import is left to the preload the command sends,
    which raises it again.
    """
    gc.disable()
    try:
        with contextlib.suppress(Exception):  # the preload says why, with what to check
            exec(compile(ONE_RUN_START, "<imports at start>", "exec"), {})
    finally:
        gc.freeze()
        gc.enable()
