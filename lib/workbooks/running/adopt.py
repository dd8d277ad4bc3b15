"""A kernel process started before jupyter_client (:mod:`workbooks.running.prelaunch`), handed
to a jupyter_client kernel manager as if the manager had launched it.

:func:`adopting_manager` gives a manager whose provisioner hands over that process instead of
launching one, if jupyter_client would have started the very same command; the manager's start,
stop, signals and liveness then work on it as on any local kernel.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

from workbooks.running.manager import KernelManager
from workbooks.running.prelaunch import Prelaunched

log = logging.getLogger(__name__)


class _Adopted(LocalProvisioner):
    """jupyter_client's local provisioner for a process it did not launch (prelaunch.py).

    The manager's start asks it for the command and then the process: it hands over the
    prelaunched ones instead of writing a connection file and launching. Stopping, signals
    and liveness are the local provisioner's, on that process. A second launch (a restart,
    which runs never do) is the local provisioner's own.
    """

    prelaunched: Prelaunched | None = None
    connection_file: Path | None = None  # the manager removes only the files it wrote

    async def pre_launch(self, **kwargs: object) -> dict[str, object]:
        if self.prelaunched is None:
            return await super().pre_launch(**kwargs)
        kwargs.pop("extra_arguments", None)
        self.connection_info = self.parent.get_connection_info()
        return {**kwargs, "cmd": self.prelaunched.command}

    async def launch_kernel(self, cmd: list[str], **kwargs: object) -> dict[str, object]:
        if self.prelaunched is None:
            return await super().launch_kernel(cmd, **kwargs)
        process = self.prelaunched.process
        self.process, self.pid, self.cwd = process, process.pid, self.prelaunched.cwd
        try:
            self.pgid = os.getpgid(process.pid)
        except OSError:  # already ended: the manager's start reports the dead kernel
            self.pgid = None
        self.prelaunched = None  # the manager owns it now
        return self.connection_info

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if not restart and self.connection_file is not None:
            self.connection_file.unlink(missing_ok=True)


def adopting_manager(
    kernel_name: str, prelaunched: Prelaunched, arguments: list[str]
) -> KernelManager | None:
    """A manager that will take over ``prelaunched``, or None if jupyter_client would have
    started another command with ``arguments`` after the connection file (a kernelspec or
    transport encryption of the user's, or other arguments)."""
    manager = KernelManager(kernel_name=kernel_name)
    try:
        manager.connection_file = str(prelaunched.connection_file)
        manager.load_connection_file()
        spec = manager.kernel_spec
        same = (
            getattr(manager, "transport_encryption", "disabled") == "disabled"
            and not spec.env
            and not spec.metadata.get("kernel_provisioner")
            and manager.format_kernel_cmd(list(arguments)) == prelaunched.command
        )
    except Exception:  # the start through jupyter_client says what is wrong
        log.debug("prelaunched kernel not adopted", exc_info=True)
        return None
    if not same:
        log.debug("prelaunched kernel not adopted: jupyter_client would start another command")
        return None
    manager.kernel_id = str(uuid.uuid4())
    provisioner = _Adopted(kernel_id=manager.kernel_id, kernel_spec=spec, parent=manager)
    provisioner.prelaunched = prelaunched
    provisioner.connection_file = prelaunched.connection_file
    manager.provisioner = provisioner
    return manager
