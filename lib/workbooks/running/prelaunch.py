"""A one-shot run's kernel process, started before jupyter_client is imported.

``workbook run``, ``demo`` and ``replay`` wait for their kernel: its start and imports are the
longest path of a cold run (issue 12). Importing jupyter_client and launching a kernel through
it (its kernelspec lookup imports IPython; its provisioners are found through entry points)
took 0.45 to 0.55 s before the kernel's process existed. This module starts the same process
the same way with the standard library only, as the command's first act: ipykernel's launcher
for the native ``python3`` kernel, a connection file with five free loopback ports, and
jupyter_client's ``launch_kernel`` settings (a session of its own, stdin closed,
``JPY_PARENT_PID``), as a kernel for one run, which does its imports as it starts, unasked
(:func:`~workbooks.running.kernels.kernel_arguments`). :func:`workbooks.running.warm.
start_warm_kernel` then adopts it, once jupyter_client is loaded, if jupyter_client would have
started the very same command; otherwise it stops this process and starts its own (a
``python3`` kernelspec of the user's, transport encryption configured).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workbooks.running.kernels import kernel_arguments, kernel_environment

NATIVE_KERNEL = "python3"
# ipykernel's own kernelspec; jupyter_client puts this interpreter in place of "python".
NATIVE_ARGV = ("-m", "ipykernel_launcher", "-f")
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
LOOPBACK = "127.0.0.1"


@dataclass(eq=False)
class Prelaunched:
    """A kernel process started by :func:`prelaunch`, not yet adopted by a kernel manager."""

    process: subprocess.Popen[bytes]
    command: list[str]
    connection_file: Path
    cwd: str
    env: dict[str, str]
    log: IO[bytes]

    def discard(self) -> None:
        """Stop the process (its whole session) and remove its connection file and log."""
        if self.process.poll() is None:
            with suppress(OSError):  # already gone
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.connection_file.unlink(missing_ok=True)
        self.log.close()


def prelaunch(kernel_name: str = NATIVE_KERNEL, *, cwd: Path | None = None) -> Prelaunched | None:
    """Start the native kernel's process now; None for another kernel or if it cannot start
    (the caller starts one through jupyter_client then, which reports the reason)."""
    if kernel_name != NATIVE_KERNEL:
        return None
    with ExitStack() as undo:
        handle, name = tempfile.mkstemp(prefix="kernel-", suffix=".json")  # mode 0600: a key
        connection_file = Path(os.path.realpath(name))  # as jupyter_client puts it in the command
        undo.callback(connection_file.unlink, missing_ok=True)
        with os.fdopen(handle, "w") as out:
            json.dump(connection_info(kernel_name), out)
        log = tempfile.TemporaryFile()  # noqa: SIM115  (Prelaunched owns it)
        undo.callback(log.close)
        arguments = kernel_arguments(imports_at_start=True)  # a kernel for one run
        command = [sys.executable, *NATIVE_ARGV, str(connection_file), *arguments]
        env = kernel_environment()
        launch_env = {**env, "JPY_PARENT_PID": str(os.getpid())}
        launch_env.pop("PYTHONEXECUTABLE", None)  # as jupyter_client's provisioner does
        workdir = str(cwd or tempfile.gettempdir())
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd=workdir,
                env=launch_env,
                start_new_session=True,
            )
        except OSError:
            return None
        assert process.stdin is not None
        process.stdin.close()
        undo.pop_all()
        return Prelaunched(process, command, connection_file, workdir, env, log)
    return None  # pragma: no cover  (the block returns)


def connection_info(kernel_name: str) -> dict[str, object]:
    """A connection file's content as jupyter_client writes it, with free loopback ports.

    The five sockets are held together while their ports are read, so no two are the same;
    another process may take one before the kernel binds it, as with jupyter_client's own.
    """
    with ExitStack() as sockets:
        ports = []
        for _ in PORT_NAMES:
            sock = sockets.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
    return {
        **dict(zip(PORT_NAMES, ports, strict=True)),
        "ip": LOOPBACK,
        "key": str(uuid.uuid4()),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": kernel_name,
    }
