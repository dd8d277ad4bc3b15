"""The kernel manager of every kernel the package starts: jupyter_client's, quick to see a
stopped kernel gone, and keeping how a kernel that died ended.

A run's kernel is killed once its last cell has replied (and the service's spare kernels when
it stops). jupyter_client then polls the process every 0.1 s until it is gone, and its first
poll comes before the signal has taken effect: every run waited 0.1 s for nothing, warm or
cold (`shutdown_kernel(now=True)` of a real kernel, 3 each: 0.112-0.116 s, 0.018-0.021 s with
this manager).
"""

from __future__ import annotations

from jupyter_client.manager import AsyncKernelManager

GONE_POLL_SECONDS = 0.005


class KernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager, polling a stopped kernel's process every 5 ms.

    ``exit_status`` is the process's return code as the first liveness check to find it ended
    saw it (negative: the signal that killed it), before the shutdown that follows lets it go;
    None while it runs or when the process was not this manager's to wait for.
    """

    exit_status: int | None = None

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
