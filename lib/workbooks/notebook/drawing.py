"""A run's charts drawn beside its cells, by a copy of the kernel on the spare core.

Drawing the charts is the largest part of a runbook's cells (docs/performance.md): 40 to 90 ms
a chart, ten to twelve charts for the busiest runbooks, on the kernel's one core while the
other core waits. A run's kernel (:mod:`workbooks.running.run_kernel`) calls :func:`enable`,
and :func:`start` forks the drawer (after pandas, or after a service kernel's warm-up). From
then on :func:`show` hands each of the package's charts to the drawer: a
:class:`~workbooks.notebook.charts.Chart` is what to draw, its data and marks, and the drawer
makes its figure and draws its PNG with :func:`workbooks.notebook.png.to_png`, the same bytes
as in the cell. The kernel only pickles the chart and goes on with the notebook. Unless it
loaded matplotlib before the drawer forked (a service kernel's warm-up), it never loads it:
the drawer does, on the other core, while the first cells run, then forks a second drawer.
Each chart goes to the drawer with fewer charts waiting: while the cells run, the two share
the spare core; the charts still waiting when the cells end are drawn on both cores
(high-error-rate's 12 charts: cold 2.24 -> 1.85 s; docs/performance.md, fourteenth pass).

A chart's place is kept by a display id: a line of text at first, replaced by the PNG after
the cell in which it is ready (IPython's ``post_run_cell``), at the latest after a cell that
failed or by :data:`DELIVER_ALL`, which the engine runs after the last cell (nbclient updates
an output by its display id, wherever it is). A chart a drawer could not draw, or that died
with, is drawn in the kernel as without this module, and the charts after it go to the other
drawer; if the drawers take longer than :data:`DRAW_TIMEOUT_SECONDS` for a chart, both are
stopped and the rest are drawn in the kernel. One that cannot be pickled is drawn in its cell.
A chart is never lost to this.

Kernels opened in JupyterLab draw in the cell: nothing there calls :func:`enable`. Without
``fork``, or with one core, charts are drawn in the cell too.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import itertools
import logging
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from typing import IO, Any

from workbooks.notebook.charts import Chart, to_png

# What the engine runs after a run's cells: nothing in a kernel that never loaded this module.
DELIVER_ALL = (
    "__import__('sys').modules.get('workbooks.notebook.drawing') and "
    "__import__('sys').modules['workbooks.notebook.drawing'].deliver_all()"
)
SETTING = "WORKBOOKS_DRAW_BESIDE"  # "off": charts are drawn in their cells (read at the start)
DRAW_TIMEOUT_SECONDS = 20.0  # a drawer that takes longer is stopped; the kernel draws instead
NOT_DRAWN = "{figure}: being drawn beside the run, which ended before the chart was ready"

log = logging.getLogger(__name__)
_LENGTH = struct.Struct(">Q")


class _Drawer:
    """The two forked children that draw: the first forked from the kernel, the second from
    the first once it has loaded matplotlib. Each chart goes to the one with fewer waiting, so
    the charts left when the cells end are drawn on both cores (docs/performance.md)."""

    def __init__(self) -> None:
        # What the kernel holds now (its imports so far) is never scanned by
        # either's GC: a collection would write to, and so copy, every page of it.
        gc.freeze()
        pipes = [os.pipe() for _ in range(4)]  # to the first, from it, to the second, from it
        pid = os.fork()
        if pid == 0:  # the child: draw until the kernel closes the pipe, then leave
            for fd in (pipes[0][1], pipes[1][0], pipes[2][1], pipes[3][0]):
                os.close(fd)
            _draw_forever((pipes[0][0], pipes[1][1]), (pipes[2][0], pipes[3][1]))
        for fd in (pipes[0][0], pipes[1][1], pipes[2][0], pipes[3][1]):
            os.close(fd)
        matplotlib = sys.modules.get("matplotlib")  # the drawer has the same settings, or its own
        self.rc = dict(matplotlib.rcParams) if matplotlib is not None else None
        self._drawn: dict[int, bytes] = {}
        self._where: dict[int, _Channel] = {}  # chart number: the drawer it went to
        self._changed = threading.Condition()
        self.channels = [
            _Channel(self, pipes[0][1], pipes[1][0], pid),
            _Channel(self, pipes[2][1], pipes[3][0], None),
        ]
        for channel in self.channels:  # once both exist: the first names the second's pid
            channel.start()

    @property
    def pid(self) -> int | None:
        """The first drawer's process, the kernel's child."""
        return self.channels[0].pid

    @property
    def alive(self) -> bool:
        return any(channel.alive for channel in self.channels)

    @property
    def pids(self) -> list[int]:
        """The drawers' processes, as far as the kernel knows them yet."""
        return [channel.pid for channel in self.channels if channel.pid is not None]

    def submit(self, number: int, chart: Any) -> None:
        """Queue ``chart`` for drawing, with the settings a cell changed; raises if it cannot
        be pickled."""
        changed = {}
        if (matplotlib := sys.modules.get("matplotlib")) is not None:  # else all as the drawer's
            rc = self.rc or {}  # loaded since the fork (by a cell): its settings all count
            changed = {k: v for k, v in matplotlib.rcParams.items() if rc.get(k) != v}
            changed.pop("backend", None)
        frame = pickle.dumps((number, pickle.dumps((chart, changed), protocol=5)), protocol=5)
        with self._changed:
            alive = [channel for channel in self.channels if channel.alive]
            if not alive:
                raise OSError("no chart drawer")
            channel = self._where[number] = min(alive, key=lambda c: len(c.pending))
            channel.pending.add(number)
        channel.send(frame)

    def take(self, number: int, *, wait: bool) -> bytes | None:
        """The PNG of chart ``number``; b"" if the drawer cannot give it; None if not yet."""
        channel = self._where[number]
        with self._changed:
            if wait and not self._changed.wait_for(
                lambda: number in self._drawn or not channel.alive, DRAW_TIMEOUT_SECONDS
            ):
                log.warning("the chart drawer took over %g s: stopped", DRAW_TIMEOUT_SECONDS)
                self.stop()
            if number in self._drawn:
                del self._where[number]
                return self._drawn.pop(number)
            return None if channel.alive else b""

    def stop(self) -> None:
        for channel in self.channels:
            if channel.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it died already
                    os.kill(channel.pid, signal.SIGKILL)
            self.lost(channel)

    def received(self, channel: _Channel, number: int, png: bytes) -> None:
        with self._changed:
            channel.pending.discard(number)
            channel.drawn += 1
            self._drawn[number] = png
            self._changed.notify_all()

    def lost(self, channel: _Channel) -> None:
        """A drawer ended or was stopped: its charts not drawn yet are drawn in the kernel."""
        with self._changed:
            channel.close()
            self._changed.notify_all()


class _Channel:
    """One drawer's pipes, seen from the kernel: a thread feeds it, one reads its PNGs."""

    def __init__(self, owner: _Drawer, outgoing: int, incoming: int, pid: int | None) -> None:
        self.owner, self.pid = owner, pid  # the second drawer's pid comes through the first's
        self.pending: set[int] = set()  # sent, or to be, and not drawn yet
        self.drawn = 0
        self.alive = True
        self._outgoing = os.fdopen(outgoing, "wb")
        self._incoming = os.fdopen(incoming, "rb")
        self._sending: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def start(self) -> None:
        for target in (self._send, self._receive):
            threading.Thread(target=target, name="workbooks-drawer", daemon=True).start()

    def send(self, frame: bytes) -> None:
        self._sending.put(frame)

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self._sending.put(None)

    def _send(self) -> None:
        try:
            with self._outgoing:
                while (frame := self._sending.get()) is not None:
                    _write_frame(self._outgoing, frame)
        except OSError:  # the drawer died: its charts are drawn by the other, or the kernel
            self.owner.lost(self)

    def _receive(self) -> None:
        try:
            with self._incoming:
                while (frame := _read_frame(self._incoming)) is not None:
                    number, png = pickle.loads(frame)
                    if number == 0:  # the first drawer forked the second
                        self.owner.channels[1].pid = png
                    else:
                        self.owner.received(self, number, png)
        except OSError:  # nothing to read any more: as if the drawer had ended
            pass
        finally:
            self.owner.lost(self)
            if self is self.owner.channels[0]:  # the kernel's child (the second is the first's)
                with contextlib.suppress(ChildProcessError):  # reaped already
                    os.waitpid(self.pid, 0)


def _draw_forever(first: tuple[int, int], second: tuple[int, int]) -> None:
    """The first drawer's life: load matplotlib, fork the second drawer, then each draws one
    PNG per chart received, and leaves when the kernel closes its pipe."""
    status = 1
    try:
        gc.disable()  # while importing (off already if the kernel forked during its own)
        _without_help_texts()
        import matplotlib  # noqa: F401

        import workbooks.notebook.figures  # noqa: F401  (loaded before the first chart comes)

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupted cell is the kernel's
        gc.freeze()  # as the kernel did: matplotlib's pages stay shared with the second drawer
        gc.enable()  # a chart's figure is a cycle: each is collected once drawn
        try:
            pid = os.fork()
        except OSError:  # one drawer, then: the kernel sees the second's pipes close
            pid = -1
        mine, other = (second, first) if pid == 0 else (first, second)
        for fd in other:
            os.close(fd)
        _draw(*mine, second=pid if pid > 0 else None)
        if pid > 0:
            os.waitpid(pid, 0)
        status = 0
    finally:
        os._exit(status)  # nothing of the kernel's (atexit, its sockets) runs in the copy


def _without_help_texts() -> None:
    """Spare a drawer the help texts matplotlib writes as it is imported, if it is not yet.

    For each artist class it defines (about 100 in a drawer), matplotlib inspects every setter
    to write the class's ``set()`` signature and docstring, and the property lists
    (``matplotlib.artist.kwdoc``) that its methods' docstrings include: about half of the
    drawer's import of matplotlib and the figures (332 -> 166 ms of CPU, median of 8;
    docs/performance.md). matplotlib PR #23686 made it cheaper; #22749 (open) would declare
    the properties instead of inspecting them. A drawer only draws PNGs, and nothing there
    reads a docstring or a ``set()`` signature (``set()`` itself is matplotlib's); the
    kernel, and JupyterLab's, keep them.
    """
    if "matplotlib" in sys.modules:  # loaded before the fork (a service kernel's warm-up)
        return
    from matplotlib import artist

    if not hasattr(artist.Artist, "_update_set_signature_and_docstring"):
        return  # another matplotlib: it writes them as it does

    def flag_only(cls: type) -> None:  # what __init_subclass__ checks for the next class
        cls.set._autogenerated_signature = True  # type: ignore[attr-defined]

    artist.Artist._update_set_signature_and_docstring = classmethod(flag_only)
    artist.kwdoc = lambda _: ""


def _draw(incoming: int, outgoing: int, *, second: int | None) -> None:
    """Draw until the pipe closes; the first drawer names the ``second`` to the kernel first."""
    import matplotlib

    with os.fdopen(incoming, "rb") as source, os.fdopen(outgoing, "wb") as sink:
        if second is not None:
            _write_frame(sink, pickle.dumps((0, second), protocol=5))
        while (frame := _read_frame(source)) is not None:
            number, chart = pickle.loads(frame)
            try:
                what, changed = pickle.loads(chart)
                with matplotlib.rc_context(changed):
                    png = to_png(what)
            except Exception:  # the kernel draws this one itself, and shows the error
                png = b""
            _write_frame(sink, pickle.dumps((number, png), protocol=5))


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    return stream.read(_LENGTH.unpack(header)[0])


_state: dict[str, Any] = {"enabled": False, "drawer": None}
_numbers = itertools.count(1)
_shown: dict[int, tuple[str, Any]] = {}  # chart number: (display id, figure) until delivered


def enable(shell: Any) -> None:
    """Draw this kernel's charts beside its cells, if it has a spare core and ``fork``."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere all the cores
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    off = os.environ.get(SETTING, "").strip().lower() in {"off", "0", "false", "no"}
    if _state["enabled"] or off or not hasattr(os, "fork") or cores < 2:
        return
    _state["enabled"] = True
    shell.events.register("post_run_cell", _after_cell)


def start() -> None:
    """Fork the drawer now, while the kernel holds only its imports (the preload's end): a
    copy forked later would keep the memory of the data the run had loaded by then."""
    if _state["enabled"] and _state["drawer"] is None:
        try:
            _state["drawer"] = _Drawer()
        except OSError:  # no fork now (out of memory, process limit): tried at the first chart
            log.warning("the chart drawer could not start", exc_info=True)


def show(chart: Any) -> bool:
    """Hand ``chart`` to the drawer and show its place; False if it is not drawn beside.

    A :class:`~workbooks.notebook.charts.Chart`, or a figure of the package's own class
    (:class:`~workbooks.notebook.png.ChartFigure`, as a cell may make one): others are drawn
    in their cells, as matplotlib and IPython would.
    """
    from IPython.display import display

    png = sys.modules.get("workbooks.notebook.png")  # loaded if a cell made a ChartFigure
    ours = isinstance(chart, Chart) or (png is not None and isinstance(chart, png.ChartFigure))
    if not _state["enabled"] or not ours:
        return False
    drawer = _state["drawer"]
    try:
        if drawer is None:
            drawer = _state["drawer"] = _Drawer()
        if not drawer.alive:  # both died or were stopped: the rest are drawn in their cells
            return False
    except OSError:  # no fork now (out of memory, process limit)
        log.warning("the chart drawer could not start: charts are drawn in their cells")
        return False
    number = next(_numbers)
    try:
        drawer.submit(number, chart)
    except Exception:  # a chart that cannot be pickled (a lambda formatter): drawn in its cell
        return False
    display_id = f"workbooks-chart-{os.getpid()}-{number}"
    _shown[number] = (display_id, chart)
    display({"text/plain": NOT_DRAWN.format(figure=chart)}, raw=True, display_id=display_id)
    return True


def deliver_all() -> None:
    """Put every chart in its place, waiting for those being drawn (the kernel has nothing
    else to do by now; the two drawers draw what is left on both cores)."""
    for number in sorted(_shown):
        _deliver(number, wait=True)


def _after_cell(result: Any = None) -> None:
    """Deliver the charts that are ready; all of them after a failed cell, where a run stops:
    the kernel may turn away a request sent just after an error (``stop_on_error``), the
    engine's :data:`DELIVER_ALL` too."""
    if result is not None and not result.success:
        deliver_all()
        return
    for number in sorted(_shown):
        _deliver(number, wait=False)


def _deliver(number: int, *, wait: bool) -> None:
    drawer = _state["drawer"]
    png = drawer.take(number, wait=wait) if drawer is not None else b""
    if png is not None:
        _place(*_shown.pop(number), png)


def _place(display_id: str, chart: Any, png: bytes) -> None:
    """Put a chart's PNG in its place; drawn here if ``png`` is empty, as without a drawer."""
    from IPython.display import update_display

    if not png:
        try:
            png = to_png(chart)
        except Exception as exc:
            update_display(
                {"text/plain": f"{chart!r} could not be drawn: {exc!r}"},
                raw=True,
                display_id=display_id,
            )
            return
    update_display(
        {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": repr(chart)},
        raw=True,
        display_id=display_id,
    )
