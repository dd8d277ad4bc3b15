"""The kernel manager of every kernel the package starts: jupyter_client's, quick to see a
stopped kernel gone, keeping how a kernel that died ended, and finding kernelspecs without
importing IPython.

A run's kernel is killed once its last cell has replied (and the service's spare kernels when
it stops). jupyter_client then polls the process every 0.1 s until it is gone, and its first
poll comes before the signal has taken effect: every run waited 0.1 s for nothing, warm or
cold (`shutdown_kernel(now=True)` of a real kernel, 3 each: 0.112-0.116 s, 0.018-0.021 s with
this manager).

jupyter_client looks for kernelspecs in IPython's old folder as well, ``IPYTHONDIR/kernels``
(``~/.ipython/kernels`` by default), and imports IPython to ask where that is
(``KernelSpecManager._kernel_dirs_default``, jupyter_client PR #41: "the cost to keeping it is
very small"). In the process that runs a notebook, which runs nothing of IPython, that import
is about 50 ms of CPU on every cold run, taken from the core the starting kernel is not using.
:class:`KernelSpecs` names the same folder as IPython does, without it.
"""

from __future__ import annotations

import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_path
from traitlets import default

GONE_POLL_SECONDS = 0.005


def ipython_kernels() -> str:
    """``IPython.paths.get_ipython_dir()`` + ``kernels``, as IPython names it: ``$IPYTHONDIR``,
    else ``.ipython`` in the real home folder. Not IPython's fallbacks: its pre-2.0 folder
    under ``~/.config`` when ``~/.ipython`` is missing, or a new temporary folder (which holds
    no kernelspec) when the folder is not writable."""
    folder = os.environ.get("IPYTHONDIR")
    if folder is None:
        folder = os.path.join(os.path.realpath(os.path.expanduser("~")), ".ipython")
    return os.path.join(os.path.normpath(os.path.expanduser(folder)), "kernels")


class KernelSpecs(KernelSpecManager):
    """jupyter_client's kernelspec lookup, looking in the same folders."""

    @default("kernel_dirs")
    def _kernel_dirs_default(self) -> list[str]:
        if "IPython" in sys.modules:  # loaded already: ask it, as jupyter_client does
            return super()._kernel_dirs_default()
        return [*jupyter_path("kernels"), ipython_kernels()]


class KernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager, polling a stopped kernel's process every 5 ms, and
    finding its kernelspec with :class:`KernelSpecs`.

    ``exit_status`` is the process's return code as the first liveness check to find it ended
    saw it (negative: the signal that killed it), before the shutdown that follows lets it go;
    None while it runs or when the process was not this manager's to wait for.
    """

    exit_status: int | None = None

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecs(data_dir=self.data_dir)

    async def _async_is_alive(self) -> bool:
        alive = await super()._async_is_alive()
        if not alive and self.exit_status is None:
            process = getattr(self.provisioner, "process", None)  # the local provisioner's
            self.exit_status = getattr(process, "returncode", None)
        return alive

    is_alive = _async_is_alive  # nbclient's check, as AsyncKernelManager binds it

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # jupyter_client's private poll loop (kill, and the end of a graceful shutdown).
        await super()._async_wait(pollinterval=min(pollinterval, GONE_POLL_SECONDS))
