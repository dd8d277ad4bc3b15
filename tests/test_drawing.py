"""A run's charts drawn beside its cells (workbooks.notebook.drawing), in real kernels.

What a user checks is the artifact: every chart in its place, the same PNG as drawn in the
cell, whatever became of the drawer; and no process left behind.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import psutil
import pytest

from test_service import wait_for
from workbooks.notebook import charts, drawing
from workbooks.notebook.charts import Chart
from workbooks.running.execution import Execution, execute_notebook
from workbooks.running.warm import KernelPool

SETUP = """\
import json, os, numpy as np, pandas as pd
from IPython.display import display
from workbooks.notebook import charts, drawing

def bars(n):
    return charts.ranked_bars(
        pd.DataFrame({"route": [f"/v1/r{i}" for i in range(n)], "ratio": np.arange(1.0, n + 1)}),
        label="route", title=f"{n} routes",
    )

def series():
    stamps = pd.date_range("2026-01-01 10:00", periods=90, freq="1min", tz="UTC")
    frame = pd.DataFrame({"timestamp": stamps, "value": np.sin(np.arange(90) / 9.0) + 2})
    return charts.timeseries(frame, title="a series", unit="seconds")

def show(figure):  # as Incident.show: beside the run, else in the cell
    return drawing.show(figure) or display(figure)

def drawer():  # the second drawer's pid comes once the first has loaded matplotlib
    found = drawing._state["drawer"]
    for _ in range(100):
        if found is None or len(found.pids) == 2:
            break
        __import__("time").sleep(0.1)
    return {"pid": found.pid, "pids": found.pids, "alive": found.alive} if found else None
"""


SEEN = """\
import json, os
from matplotlib.lines import Line2D
from workbooks.notebook.figures import new_figure

def figure(path):
    line = Line2D([0, 1], [0, 1])
    line.set(lw=3, linestyle="--", c="red")  # aliases and names, as set() takes them
    said = {"pid": os.getpid(), "help": bool(Line2D.set.__doc__),
            "set": [line.get_linewidth(), line.get_linestyle(), line.get_color()]}
    with open(path, "w") as out:
        json.dump(said, out)
    return new_figure()
"""


def made_here(n: int | None) -> bytes:
    """The PNG drawn in this process of the notebook's ``bars(n)``, or ``series()`` if None."""
    if n is None:
        stamps = pd.date_range("2026-01-01 10:00", periods=90, freq="1min", tz="UTC")
        frame = pd.DataFrame({"timestamp": stamps, "value": np.sin(np.arange(90) / 9.0) + 2})
        return charts.to_png(charts.timeseries(frame, title="a series", unit="seconds"))
    table = pd.DataFrame({"route": [f"/v1/r{i}" for i in range(n)], "ratio": np.arange(1.0, n + 1)})
    return charts.to_png(charts.ranked_bars(table, label="route", title=f"{n} routes"))


def run(tmp_path: Path, cells: list[str], pool: KernelPool | None = None) -> tuple[Execution, list]:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(SETUP), *map(nbformat.v4.new_code_cell, cells)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, str(tmp_path / "in.ipynb"))
    kernel = pool.take() if pool else None
    execution = execute_notebook(
        tmp_path / "in.ipynb",
        tmp_path / "out.ipynb",
        {},
        cwd=tmp_path,
        cell_timeout=60,
        run_timeout=120,
        kernel=kernel,
    )
    cells = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells
    return execution, [cell for cell in cells if cell.cell_type == "code"][1:]  # after SETUP


def pngs(cell: nbformat.NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(out["data"]["image/png"])
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]


def printed(cell: nbformat.NotebookNode) -> dict:
    return json.loads("".join(out["text"] for out in cell.outputs if out.get("name") == "stdout"))


def no_placeholder_left(cells: list) -> bool:
    text = json.dumps([cell.outputs for cell in cells])
    return "being drawn beside the run" not in text


@pytest.mark.parametrize("kernel", ["started for the run", "warm, from the service's pool"])
def test_a_runs_charts_are_drawn_beside_it_each_in_its_place(tmp_path: Path, kernel: str) -> None:
    cells = [
        "print(json.dumps({'beside': drawing.show(bars(3)), 'kernel': os.getpid()}))",
        "show(series()); show(bars(7))",
        "sum(range(10**6))  # a cell with no chart",
        "print(json.dumps(drawer()))\nshow(bars(12))",  # ready only after the last cell
        "import sys\nprint(json.dumps('matplotlib' in sys.modules))",
        # Drawn beside by a function of a module in the run's folder, which says what it saw.
        "import seen\nfrom workbooks.notebook.charts import Chart\n"
        "show(Chart(seen.figure, 'seen.json'))\n"
        "import matplotlib.lines\nprint(json.dumps(bool(matplotlib.lines.Line2D.set.__doc__)))",
    ]
    (tmp_path / "seen.py").write_text(SEEN)
    if kernel == "started for the run":
        execution, out = run(tmp_path, cells)
    else:
        with KernelPool(1, warm_up=True) as pool:
            wait_for(lambda: pool.ready == 1, 60, "a warm kernel")
            execution, out = run(tmp_path, cells, pool)
    assert execution.status == "succeeded", execution.error
    first, drawer = printed(out[0]), printed(out[3])
    assert first["beside"] and drawer["alive"] and first["kernel"] not in drawer["pids"]
    assert len(set(drawer["pids"])) == 2, "the first drawer forked no second"
    assert pngs(out[0]) == [made_here(3)]
    assert pngs(out[1]) == [made_here(None), made_here(7)]
    assert pngs(out[2]) == []
    assert pngs(out[3]) == [made_here(12)]
    assert no_placeholder_left(out)
    # A kernel started for its run never loads matplotlib: its drawer makes the figures.
    assert printed(out[4]) is (kernel != "started for the run")
    # Its drawer loads matplotlib without the help texts, and set() works as ever; the
    # kernel keeps them. (A warm kernel loaded matplotlib before the fork, help texts and
    # all; its drawers started in the pool's folder, so this chart is drawn in the kernel.)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert len(pngs(out[5])) == 1 and seen["set"] == [3.0, "--", "red"], "set() lost a property"
    if kernel == "started for the run":
        assert seen["pid"] in drawer["pids"] and seen["help"] is False
    else:
        assert seen["pid"] == first["kernel"] and seen["help"] is True
    assert printed(out[5]) is True, "the kernel lost matplotlib's help texts"
    # The drawers end with their kernel.
    deadline = time.monotonic() + 10
    while any(map(psutil.pid_exists, drawer["pids"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(psutil.pid_exists, drawer["pids"])), "a drawer outlived its kernel"


def test_the_two_drawers_share_a_runs_charts(tmp_path: Path) -> None:
    """A cell shows four charts: each goes to the drawer with fewer waiting, so both draw,
    and each PNG is the same whoever drew it. When one drawer dies, the other draws on."""
    cells = [
        "for n in (30, 31, 32, 33):\n    show(bars(n))\n"
        "drawing.deliver_all()  # as the engine does after the last cell\n"
        "print(json.dumps([c.drawn for c in drawing._state['drawer'].channels]))",
        "import signal\nos.kill(drawer()['pid'], signal.SIGKILL)\n"
        "for n in (9, 10):\n    show(bars(n))",
        "print(json.dumps(drawer()['alive']))",
    ]
    execution, out = run(tmp_path, cells)
    assert execution.status == "succeeded", execution.error
    assert printed(out[0]) == [2, 2], "the charts were not shared between the two drawers"
    assert pngs(out[0]) == [made_here(30), made_here(31), made_here(32), made_here(33)]
    assert pngs(out[1]) == [made_here(9), made_here(10)]
    assert printed(out[2]) is True, "the second drawer stopped with the first"
    assert no_placeholder_left(out)


def test_charts_the_drawer_cannot_draw_are_drawn_in_the_kernel(tmp_path: Path) -> None:
    cells = [
        # A chart class the notebook defines after the drawer forked: the drawer cannot load it.
        "class Mine(type(bars(1))):\n    pass\n"
        "mine = bars(4); mine.__class__ = Mine\nprint(json.dumps(drawing.show(mine)))",
        # A chart that cannot be pickled (a lambda formatter) is drawn in its cell.
        "from matplotlib.ticker import FuncFormatter\nodd = bars(5)\n"
        "odd.figure.axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f'{x:g}!'))\n"
        "print(json.dumps(drawing.show(odd)))\nodd",
        # The drawer dies: the charts after it are drawn in the kernel.
        "import signal\nos.kill(drawer()['pid'], signal.SIGKILL)\nshow(bars(6))",
        "show(bars(2))",
    ]
    execution, out = run(tmp_path, cells)
    assert execution.status == "succeeded", execution.error
    assert printed(out[0]) is True and pngs(out[0]) == [made_here(4)]
    assert printed(out[1]) is False and len(pngs(out[1])) == 1  # shown as a cell's value
    assert pngs(out[2]) == [made_here(6)]
    assert pngs(out[3]) == [made_here(2)]
    assert no_placeholder_left(out)


def test_a_chart_that_cannot_be_drawn_says_why_in_its_place(tmp_path: Path) -> None:
    """Its data are checked where it is drawn: the run goes on, and the chart's place says
    what was wrong with them."""
    cells = [
        "show(charts.timeseries(pd.DataFrame({'value': [1.0, 2.0]}), title='p99 by route'))",
        "show(bars(3))",
    ]
    execution, out = run(tmp_path, cells)
    assert execution.status == "succeeded", execution.error
    text = "".join(o["data"]["text/plain"] for o in out[0].outputs if "data" in o)
    assert "<chart: p99 by route> could not be drawn" in text and "expected timestamps" in text
    assert pngs(out[0]) == [] and pngs(out[1]) == [made_here(3)]
    assert no_placeholder_left(out)


def test_a_failed_runs_charts_are_in_its_artifact(tmp_path: Path) -> None:
    execution, out = run(tmp_path, ["show(bars(8))\nraise ValueError('broken cell')"])
    assert execution.status == "failed" and "broken cell" in execution.error["message"]
    assert pngs(out[0]) == [made_here(8)]
    assert no_placeholder_left(out)


def test_a_kernel_that_did_not_enable_it_draws_in_the_cell() -> None:
    """JupyterLab's kernels, nbval's, this process: nothing calls enable()."""
    figure = charts.no_data("nothing", "no data")
    assert isinstance(figure, Chart)
    assert drawing.show(figure) is False


def test_off_draws_a_runs_charts_in_their_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(drawing.SETTING, "off")
    execution, out = run(tmp_path, ["print(json.dumps(drawer()))\nshow(bars(3))"])
    assert execution.status == "succeeded", execution.error
    assert printed(out[0]) is None, "a drawer was started"
    assert pngs(out[0]) == [made_here(3)]
