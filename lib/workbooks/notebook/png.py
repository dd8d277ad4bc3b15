"""A chart as PNG: drawn once on an Agg canvas, laid out in one measuring pass, 256 colours.

matplotlib's Agg canvas needs no display. The figures of :mod:`workbooks.notebook.figures` are
:class:`ChartFigure` figures, which IPython shows through :func:`to_png` when one is a cell's
value.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from matplotlib.axis import Axis, Tick
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.layout_engine import TightLayoutEngine
from PIL import Image

MAX_RENDERERS = 4  # per thread; charts come in a few sizes (bars grow with their rows)
_RENDERERS = threading.local()


class TightOnce(TightLayoutEngine):
    """matplotlib's tight layout, measured once for a chart of one Axes.

    ``TightLayoutEngine`` measures every Axes twice: a second pass for its ``rect`` that gives
    the same margins when the figure holds one Axes, as every chart here does. That pass was
    about a tenth of a chart's cost (three charts: 187 -> 165 ms). Other figures, or a canvas
    that cannot lend its renderer, get matplotlib's own engine.
    """

    def execute(self, fig: Figure) -> None:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        spec = axes[0].get_subplotspec() if len(axes) == 1 else None
        get_renderer = getattr(fig.canvas, "get_renderer", None)
        if spec is None or get_renderer is None:
            return super().execute(fig)
        pad = self._params["pad"] * FontProperties(size="medium").get_size_in_points() / 72
        width, height = fig.get_size_inches()
        slot = spec.get_position(fig)
        tight = axes[0].get_tightbbox(get_renderer(), for_layout_only=True)
        tight = fig.transFigure.inverted().transform_bbox(tight)
        left = max(slot.xmin - tight.xmin, 0) + pad / width
        right = max(tight.xmax - slot.xmax, 0) + pad / width
        bottom = max(slot.ymin - tight.ymin, 0) + pad / height
        top = max(tight.ymax - slot.ymax, 0) + pad / height
        if left + right < 1 and bottom + top < 1:
            fig.subplots_adjust(left=left, right=1 - right, bottom=bottom, top=1 - top)
        return None


class ChartFigure(Figure):
    """A Figure that renders itself as PNG in IPython, with no pyplot involved."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, at its own size and dpi, stored with a 256-colour palette.

    One draw on an Agg canvas (the layout engine runs inside it), then Pillow's fast-octree
    palette and its default compression: about a third of the bytes of matplotlib's own RGBA
    PNG at no visible cost for these charts, and less than half the time of ``savefig`` and a
    median-cut palette (a 6-series chart: 219 -> 81 ms; docs/performance.md).
    """
    original = figure.canvas
    canvas = _Canvas(figure)
    try:
        with _ticks_once(figure):
            canvas.draw()
        size = canvas.get_width_height(physical=True)
        image = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    finally:
        figure.set_canvas(original)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def _ticks_once(figure: Figure) -> Iterator[None]:
    """Within one draw, each axis places and formats its ticks once per position of its Axes.

    matplotlib's ``Axis._update_ticks`` runs its locator and formatter and updates every tick
    each time a part of the chart asks: the layout's measure of the axis, of each spine, of the
    label beside it, then the draw asks it all again: 22 times for a chart of one Axes, where
    only two can differ (the layout moves the Axes once). Its result depends on the view
    limits and the Axes' box in pixels, so it is kept for those and computed again when either
    changes; the PNG is byte for byte the same (every chart of the 15 demo runbooks;
    tests/test_charts.py). Only during this draw: a chart changed after it was shown gets its
    new ticks. A matplotlib without that private method draws as matplotlib does.
    """
    update = getattr(Axis, "_update_ticks", None)
    axes = [axis for ax in figure.axes for axis in (ax.xaxis, ax.yaxis)] if update else []
    for axis in axes:
        axis._update_ticks = _kept(axis, update)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for axis in axes:
            vars(axis).pop("_update_ticks", None)


def _kept(axis: Axis, update: Callable[[Axis], list[Tick]]) -> Callable[[], list[Tick]]:
    kept: list[tuple[object, list[Tick]]] = []

    def update_ticks() -> list[Tick]:
        key = (tuple(axis.get_view_interval()), axis.axes.bbox.bounds)
        if not kept or kept[0][0] != key:
            kept[:] = [(key, update(axis))]
        return list(kept[0][1])

    return update_ticks


class _Canvas(FigureCanvasAgg):
    """An Agg canvas that draws on this thread's renderer for its size, kept between charts.

    matplotlib caches text measurements per renderer, and a new canvas makes a new renderer:
    every chart measured its tick labels, legend entries and titles again. Kept, the sizes of
    "14:00", "time (UTC)" or a route's name are measured once per kernel (high-latency's demo
    cells after the imports: 2.41 -> 2.30 s of CPU, median of 5; the PNGs are byte for byte
    the same). Per thread, so two threads never draw on one renderer.
    """

    def get_renderer(self) -> RendererAgg:
        width, height = self.get_width_height(physical=True)
        key = (width, height, self.figure.dpi)
        kept: dict[tuple[int, int, float], RendererAgg] = _RENDERERS.__dict__.setdefault("kept", {})
        if key not in kept:
            if len(kept) >= MAX_RENDERERS:  # each holds its image: 1.3 MB for a 9 x 3.5 in chart
                kept.pop(next(iter(kept)))
            kept[key] = RendererAgg(width, height, self.figure.dpi)
        self.renderer = kept[key]
        return self.renderer
