"""Kernels started ahead of need, with the heavy imports done, each used for one run.

A run's kernel spends most of its first cell importing pandas, matplotlib and the package
(measured: 0.7 to 1.8 s of a 3 to 5 s run, on top of about 1 s to start the kernel). A
:class:`KernelPool` starts kernels before any alert arrives and runs :data:`PRELOAD` in them, so
a run finds a kernel that is ready. Each kernel serves ONE run and is then shut down, and the
pool starts a replacement: nothing of one incident can reach the next: before its run a kernel
has only imported (and, in the service, warmed up on made-up numbers: :data:`WARM_UP`).

A warm kernel was started before its run's folder existed, so :func:`prepare` moves it there:
it runs ``os.chdir`` and sets the run's environment (``WORKBOOKS_EVIDENCE_DIR`` etc.) as a
silent request on the kernel's shell channel before papermill connects. Silent requests get no
execution count and broadcast nothing, so the artifact is the same as from a fresh kernel, whose
cwd and environment were given at start: its first cell is ``In [1]``.

A run is given its kernel by :mod:`workbooks.running.engine`, papermill's engine for every run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from jupyter_client.blocking import BlockingKernelClient

from workbooks.core.errors import RunFailedError
from workbooks.running.adopt import adopting_manager
from workbooks.running.kernels import DRAWER, PRELOAD, SHARED, kernel_arguments, kernel_environment
from workbooks.running.manager import KernelManager
from workbooks.running.prelaunch import Prelaunched

log = logging.getLogger(__name__)

WARM_UP = f"import workbooks.notebook.warmup\nworkbooks.notebook.warmup.warm_up()\n{DRAWER}"
START_TIMEOUT_SECONDS = 60.0
PRELOAD_TIMEOUT_SECONDS = 120.0


@dataclass(eq=False)
class WarmKernel:
    """A started kernel with :data:`PRELOAD` done, the file its output goes to, and the
    package's settings (``WORKBOOKS_*``) it started with."""

    manager: KernelManager
    log: IO[bytes]
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """Whether the kernel's process is running (its process, not its heartbeat)."""
        process = getattr(self.manager.provisioner, "process", None)
        return process is not None and process.poll() is None

    def shutdown(self) -> None:
        """Shut the kernel down if its run did not (never used, or the run failed to start)."""
        try:
            if self.manager.has_kernel:
                asyncio.run(self.manager.shutdown_kernel(now=True))
        except Exception:  # already gone: nothing else to release
            log.debug("warm kernel already stopped", exc_info=True)

    def discard(self) -> None:
        """Shut the kernel down and drop its log."""
        self.shutdown()
        self.log.close()


def start_warm_kernel(
    kernel_name: str = "python3",
    *,
    preload: str = PRELOAD,
    cwd: Path | None = None,
    launched: threading.Event | None = None,
    cancel: threading.Event | None = None,
    prelaunched: Prelaunched | None = None,
    warm_up: Callable[[], bool] | None = None,
) -> WarmKernel:
    """Start a kernel and run ``preload`` in it; raises :class:`RunFailedError` if it fails.

    ``launched`` is set once the kernel's process is started (or its start failed), before its
    imports; ``cancel``, when set, stops the wait for them and shuts the kernel down. A
    ``prelaunched`` process (:mod:`workbooks.running.prelaunch`) is adopted if it is the kernel
    jupyter_client would start (it keeps the folder it started in), and stopped otherwise.
    ``warm_up``, asked after the imports, says whether to run :data:`WARM_UP` before the
    drawer starts (:data:`DRAWER`); without it, the drawer starts once :data:`SHARED` is loaded,
    and the kernel does those imports as it starts (:func:`~workbooks.running.kernels.
    kernel_arguments`), before ``preload`` is sent.
    """
    arguments = kernel_arguments(imports_at_start=warm_up is None)
    manager = adopting_manager(kernel_name, prelaunched, arguments) if prelaunched else None
    if manager is None:
        if prelaunched is not None:
            prelaunched.discard()
        prelaunched = None
        manager = KernelManager(kernel_name=kernel_name)
    kernel_log = prelaunched.log if prelaunched else tempfile.TemporaryFile()  # noqa: SIM115
    env = prelaunched.env if prelaunched else kernel_environment()
    try:
        asyncio.run(
            manager.start_kernel(
                cwd=str(cwd or tempfile.gettempdir()),
                env=env,
                stdout=kernel_log,
                stderr=kernel_log,
                extra_arguments=arguments,
            )
        )
        if prelaunched is not None and manager.provisioner.process is not prelaunched.process:
            prelaunched.process.kill()  # a jupyter_client that launched a kernel of its own
        if launched is not None:
            launched.set()
        kernel = WarmKernel(manager, kernel_log, _settings(env))
        _silent(
            kernel,
            f"{SHARED}\n{DRAWER}\n{preload}" if warm_up is None else preload,
            cancel=cancel,
            timeout=PRELOAD_TIMEOUT_SECONDS,
            what=repr(preload.splitlines()[0]),
            hint="; check the package imports in this environment "
            "(python -c 'import workbooks.notebook.incident')",
        )
        if warm_up is not None:
            code, what = (WARM_UP, "WARM_UP") if warm_up() else (DRAWER, "DRAWER")
            _silent(kernel, code, cancel=cancel, timeout=START_TIMEOUT_SECONDS, what=what)
    except BaseException:
        WarmKernel(manager, kernel_log).discard()
        if prelaunched is not None:
            prelaunched.discard()  # if the manager never took it
        raise
    finally:
        if launched is not None:
            launched.set()  # failed before its process started: nobody waits for it
    return kernel


SETTINGS_PREFIX = "WORKBOOKS_"


def prepare(kernel: WarmKernel, *, cwd: Path, env: Mapping[str, str]) -> None:
    """Put the kernel in the run's folder with the run's environment, invisibly to the notebook.

    The package's settings (``WORKBOOKS_*``) are this process's as they are now, as a kernel
    started now would inherit them, not as they were when the warm kernel started: a setting
    changed or removed since (``WORKBOOKS_NOW`` pinned for one case of ``workbook test``) is
    changed or removed in the kernel too; only those are sent. ``env`` goes on top.
    """
    now = _settings(os.environ)
    changed = {k: v for k, v in now.items() if kernel.settings.get(k) != v} | dict(env)
    removed = sorted(set(kernel.settings) - set(now) - set(changed))
    body = (
        "import os\n"
        f"os.chdir({str(cwd)!r})\n"
        f"os.environ.update({changed!r})\n"
        f"for key in {removed!r}:\n"
        "    os.environ.pop(key, None)\n"
    )
    code = f"exec({body!r}, {{}})"  # in a namespace of its own: the notebook's stays empty
    # Never the code in a message: a changed setting may be a credential.
    _silent(kernel, code, timeout=START_TIMEOUT_SECONDS, what="the run's set-up (folder, settings)")


def _settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(SETTINGS_PREFIX)}


def _silent(
    kernel: WarmKernel,
    code: str,
    *,
    timeout: float,
    what: str,
    hint: str = "",
    cancel: threading.Event | None = None,
) -> None:
    """Run ``code`` as a silent request (no execution count, no broadcast); raise if it fails,
    or as soon as ``cancel`` is set.

    Liveness is the kernel's process, not the client's heartbeat: on a loaded machine a
    heartbeat misses its second and ``wait_for_ready`` calls a starting kernel dead (seen with
    the load average at 4 on 2 cores).
    """
    client = BlockingKernelClient()
    client.load_connection_info(kernel.manager.get_connection_info())
    client.start_channels(iopub=False, stdin=False, hb=False, control=False)
    deadline = time.monotonic() + timeout
    try:
        msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
        while True:
            try:
                reply = client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    raise RunFailedError("the kernel's start was cancelled") from None
                if not kernel.alive:
                    raise RunFailedError(
                        "a warm kernel died while starting; its log says why "
                        "(jupyter kernelspec list shows the kernel it ran)"
                    ) from None
                if time.monotonic() > deadline:
                    raise RunFailedError(
                        f"a warm kernel did not answer in {timeout:g} s; the machine may be "
                        "overloaded: retry, or run fewer workers"
                    ) from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    content = reply["content"]
    if content["status"] != "ok":
        raise RunFailedError(
            f"a warm kernel could not run {what}: {content.get('ename')}: "
            f"{content.get('evalue')}{hint}"
        )


class KernelPool:
    """``size`` warm kernels kept ready; :meth:`take` hands one out for one run.

    ``runs`` is how many runs the pool is for: it starts no more kernels than that, and
    :meth:`take` starts one on demand for a run beyond them. None (a service): every kernel
    taken is replaced in the background, for as long as the pool is open. ``workbook run``
    is one run, ``workbook test`` one per case. ``size`` background threads start them, so
    kernels are started as many at a time as there are runs to use them, as before there
    was a pool.

    A replacement waits while a run is going and another kernel is ready: starting a kernel
    and its imports takes a core for 2 to 3 s, which slowed the run it was started beside (warm
    high-latency on 2 cores: 3.02 -> 2.52 s held back; docs/performance.md). It starts at
    once when no kernel is left ready, so the next alert never waits for a kernel the pool
    could have been starting. A run's kernel is taken with :meth:`lease`, which tells the pool
    when the run has ended. ``prelaunched`` is the first kernel's process when the command has
    started it already (:mod:`workbooks.running.prelaunch`); closing the pool stops it if no
    kernel was made of it.

    ``warm_up`` (the service's): a kernel whose imports end while no run goes also runs
    :data:`WARM_UP`, never beside a run, whose spare core it would take (docs/performance.md).
    """

    def __init__(
        self,
        size: int,
        *,
        kernel_name: str = "python3",
        preload: str = PRELOAD,
        runs: int | None = None,
        prelaunched: Prelaunched | None = None,
        warm_up: bool = False,
    ) -> None:
        self.size = size
        self.warm_up = warm_up
        self.kernel_name = kernel_name
        self.preload = preload
        self.runs = runs
        self._wants = 0  # kernels asked of the starter threads so far
        self._ready: queue.Queue[WarmKernel | BaseException] = queue.Queue()
        self._wanted: queue.Queue[bool] = queue.Queue()
        self._pending = 0
        self._running = 0  # kernels taken whose runs have not ended
        self._starting = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._launched = threading.Event()  # the first kernel's process has started
        self._prelaunched = prelaunched  # the first kernel's process, if already started
        if prelaunched is not None:
            self._launched.set()
        self._threads = [
            threading.Thread(target=self._starter, name=f"warm-kernel-{n}", daemon=True)
            for n in range(size)
        ]
        for _ in range(size if runs is None else min(size, runs)):
            self._want()
        for thread in self._threads:
            thread.start()

    def _want(self) -> None:
        with self._lock:
            self._pending += 1
            self._wants += 1
        self._wanted.put(True)

    def _starter(self) -> None:
        while self._wanted.get() and not self._closed.is_set():
            with self._changed:
                self._changed.wait_for(self._may_start)
                self._starting += 1
                prelaunched, self._prelaunched = self._prelaunched, None
            try:
                kernel: WarmKernel | BaseException = start_warm_kernel(
                    self.kernel_name,
                    preload=self.preload,
                    launched=self._launched,
                    cancel=self._closed,
                    prelaunched=prelaunched,
                    warm_up=self._idle if self.warm_up else None,
                )
            except Exception as exc:  # handed to the run that takes it, which records it
                kernel = exc
            finally:
                with self._lock:
                    self._starting -= 1
            if self._closed.is_set():
                if isinstance(kernel, WarmKernel):
                    kernel.discard()
                return
            self._ready.put(kernel)

    def _idle(self) -> bool:  # no run going, nor waiting for a kernel (lease() counts it)
        with self._lock:
            return self._running == 0 and not self._closed.is_set()

    def _may_start(self) -> bool:
        """Whether a kernel may start now: no run to slow down, or none ready for the next."""
        return self._closed.is_set() or self._running == 0 or self._ready.qsize() == 0

    def wait_launched(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Return once the first kernel's process has started (its imports go on in it).

        A one-shot command waits here before its own imports: starting the process is Python
        work in this process, which the command's imports would slow down while the kernel,
        the longer path, waits for it (issue 12).
        """
        self._launched.wait(timeout)

    @property
    def ready(self) -> int:
        """How many kernels are started and waiting for a run."""
        return self._ready.qsize()

    @property
    def starting(self) -> int:
        """How many kernels are being started now."""
        return self._starting

    @contextmanager
    def lease(self) -> Iterator[WarmKernel]:
        """A kernel for one run (:meth:`take`), the run counted as going until the block ends."""
        with self._changed:
            self._running += 1
        try:
            yield self.take()
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def take(self) -> WarmKernel:
        """A warm kernel, waiting for one being started; a new one if none is coming.

        Runs take theirs with :meth:`lease`: a kernel taken here alone does not hold back the
        start of its replacement.

        A kernel that failed to start, or died while it waited (killed, out of memory), is not
        handed to a run: one is started for it instead, and only if that fails too does the run
        fail, with the reason.
        """
        with self._lock:
            coming = self._pending > 0
            if coming:
                self._pending -= 1
        if not coming:
            return start_warm_kernel(self.kernel_name, preload=self.preload)
        if (self.runs is None or self._wants < self.runs) and not self._closed.is_set():
            self._want()
        kernel = self._ready.get()
        with self._changed:  # one fewer ready: a deferred replacement may have to start now
            self._changed.notify_all()
        if isinstance(kernel, WarmKernel) and kernel.alive:
            return kernel
        if isinstance(kernel, WarmKernel):
            log.warning("a warm kernel died while it waited; starting one for this run")
            kernel.discard()
        else:
            log.warning("a warm kernel failed to start (%s); starting one for this run", kernel)
        try:
            return start_warm_kernel(self.kernel_name, preload=self.preload)
        except Exception as exc:
            raise RunFailedError(f"no kernel could be started: {exc}") from exc

    def close(self) -> None:
        """Shut down the kernels not taken and stop those being started (a command that
        failed on bad input does not wait for their imports); those taken are ended by their
        runs."""
        with self._changed:
            self._closed.set()
            self._changed.notify_all()
        for _ in self._threads:
            self._wanted.put(False)
        for thread in self._threads:
            thread.join(timeout=START_TIMEOUT_SECONDS)
        with self._lock:
            prelaunched, self._prelaunched = self._prelaunched, None
        if prelaunched is not None:  # closed before a starter took it
            prelaunched.discard()
        while True:
            try:
                kernel = self._ready.get_nowait()
            except queue.Empty:
                return
            if isinstance(kernel, WarmKernel):
                kernel.discard()

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
