"""The kernel manager of every kernel the package starts: jupyter_client's, quick to see a
stopped kernel gone.

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
    """jupyter_client's kernel manager, polling a stopped kernel's process every 5 ms."""

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # jupyter_client's private poll loop (kill, and the end of a graceful shutdown).
        await super()._async_wait(pollinterval=min(pollinterval, GONE_POLL_SECONDS))
