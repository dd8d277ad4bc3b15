"""A run's queries fetched a few cells ahead of the cell that asks for them.

Each ``incident.query(...)`` of a runbook waited for its answer before the cell went on, and
the next query was sent only when its own cell ran: a run against a remote Prometheus waited
for every query in turn. Before a run's first cell the engine (:mod:`workbooks.running.engine`)
reads the notebook's code cells and gives the kernel the queries they ask, in order
(:func:`expected_queries`: literal ``incident.query("name", baseline=False, quantile=0.99)``
calls; a query built at run time is not among them). The run's :class:`~workbooks.notebook.
incident.Incident` then keeps :data:`DEPTH` of them fetching, on the same bounded pool as its own
queries (at most 4 requests in flight), while the cells before them run.

A cell still asks for its query as before, and gets the fetched answer only if it is the very
query (name, rendered PromQL, baseline or not); it saves the evidence, shows the query and
records findings itself, in its own order. A query asked that was not expected, or asked out of
order, is fetched when asked; the expected ones it passed are dropped. A notebook opened in
JupyterLab has no engine and fetches each query when its cell runs.

Nothing here imports pandas: the engine's process reads the cells with :mod:`ast` alone.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

DEPTH = 2  # queries fetched ahead: each holds its answers (window and baseline) until asked
INCIDENT = "incident"  # the name every runbook gives its Incident (templates/new)

# (name, baseline, values as sorted pairs): as the engine found them in the notebook's cells
Expected = tuple[str, bool, tuple[tuple[str, Any], ...]]
# (evidence key, rendered query, baseline): what a cell's query must match to take the answers
Fetched = tuple[str, str, bool]

_expected: list[Expected] = []


def expected_queries(sources: Iterable[str]) -> list[Expected]:
    """The literal ``incident.query(...)`` calls of these code cells, in order.

    A call counts if its name is a string and every keyword a literal (``promql=`` excepted: a
    query written by hand is run as the cell asks it). Cells that are not Python (a magic)
    are skipped.
    """
    found: list[Expected] = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        calls = [node for node in ast.walk(tree) if _is_query(node)]
        for call in sorted(calls, key=lambda node: (node.lineno, node.col_offset)):
            found.extend(_literal(call))
    return found


def _is_query(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "query"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == INCIDENT
    )


def _literal(call: ast.Call) -> list[Expected]:
    if len(call.args) != 1 or not isinstance(call.args[0], ast.Constant):
        return []
    name, values, baseline = call.args[0].value, {}, True
    for keyword in call.keywords:
        if keyword.arg in (None, "promql") or not isinstance(keyword.value, ast.Constant):
            return []
        if keyword.arg == "baseline":
            baseline = bool(keyword.value.value)
        else:
            values[keyword.arg] = keyword.value.value
    return [(name, baseline, tuple(sorted(values.items())))] if isinstance(name, str) else []


def expect(queries: list[Expected]) -> None:
    """Called in the kernel by the engine before the first cell: the run's queries, in order."""
    _expected[:] = queries


def take_expected() -> list[Expected]:
    """The queries :func:`expect` was given, for the run's one Incident (then none are left)."""
    queries = list(_expected)
    _expected.clear()
    return queries


class Ahead:
    """The expected queries of one Incident, :data:`DEPTH` of them fetched ahead of the cells.

    ``fetch`` starts one expected query and says what it is, or returns None if it cannot be
    fetched ahead (its name or placeholders unknown, the source down): it is then fetched when
    its cell asks, which reports why.
    """

    def __init__(
        self,
        expected: Iterable[Expected],
        fetch: Callable[[Expected], tuple[Fetched, list[Future[Any]]] | None],
    ) -> None:
        self._waiting = deque(expected)
        self._fetch = fetch
        self._fetched: list[tuple[Fetched, list[Future[Any]]]] = []

    def take(self, asked: Fetched) -> list[Future[Any]] | None:
        """The answers fetched ahead for this query, or None; then more are fetched."""
        taken = None
        for index, (fetched, futures) in enumerate(self._fetched):
            if fetched == asked:
                for _, passed in self._fetched[:index]:  # expected, not asked: not needed
                    _cancel(passed)
                del self._fetched[: index + 1]
                taken = futures
                break
        self.top_up()
        return taken

    def top_up(self) -> None:
        while self._waiting and len(self._fetched) < DEPTH:
            started = self._fetch(self._waiting.popleft())
            if started is not None:
                self._fetched.append(started)

    def stop(self) -> None:
        """Fetch nothing more (the source is down): what has not started is cancelled."""
        self._waiting.clear()
        for _, futures in self._fetched:
            _cancel(futures)
        self._fetched.clear()


def _cancel(futures: list[Future[Any]]) -> None:
    for future in futures:
        future.cancel()  # a request already sent finishes; its answer is dropped
