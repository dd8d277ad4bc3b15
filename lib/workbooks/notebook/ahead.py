"""A run's queries fetched a few cells ahead of the cell that asks for them.

Each ``incident.query(...)`` of a runbook waited for its answer before the cell went on, and
the next query was sent only when its own cell ran: a run against a remote Prometheus waited
for every query in turn. Before a run's first cell the engine (:mod:`workbooks.running.engine`)
reads the notebook's code cells and gives the kernel the queries they ask, in order
(:func:`expected_queries`: ``incident.query("name", baseline=False, quantile=0.99)`` with
literal values, and ``**scope`` read in the kernel once a cell has set it; a query whose name
only the run knows, or under a condition, is not among them). The run's
:class:`~workbooks.notebook.incident.Incident` then keeps :data:`DEPTH` of them fetching, on the
same bounded pool as its own queries (at most 4 requests in flight), while the cells before
them run.

A cell still asks for its query as before, and gets the fetched answer only if it is the very
query (name, rendered PromQL, baseline or not); it saves the evidence, shows the query and
records findings itself, in its own order. A query asked that was not expected, or asked out of
order, is fetched when asked; the expected ones it passed are dropped. A notebook opened in
JupyterLab has no engine and fetches each query when its cell runs.

Nothing here imports pandas: the engine's process reads the cells with :mod:`ast` alone.
"""

from __future__ import annotations

import ast
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

DEPTH = 2  # queries fetched ahead: each holds its answers (window and baseline) until asked
INCIDENT = "incident"  # the name every runbook gives its Incident (templates/new)

# (name, baseline, values as sorted pairs, the variable spread into them: ("scope",) for
# ``**scope``, ("scope", "values") for ``**scope.values``, () for none): as the engine found
# them in the notebook's cells
Expected = tuple[str, bool, tuple[tuple[str, Any], ...], tuple[str, ...]]
# (name, baseline, values): an expected query with its variable's values read, ready to fetch
Ready = tuple[str, bool, tuple[tuple[str, Any], ...]]
# (evidence key, rendered query, baseline): what a cell's query must match to take the answers
Fetched = tuple[str, str, bool]

_expected: list[Expected] = []
# One parse at a time: CPython 3.11 keeps ast.parse's recursion depth per interpreter, and two
# runs' engines parsing at once in the service's threads failed a run with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905).
_PARSING = threading.Lock()


def expected_queries(sources: Iterable[str]) -> list[Expected]:
    """The literal ``incident.query(...)`` calls of these code cells, in order.

    A call counts if its name is a string and every keyword a literal (``promql=`` excepted: a
    query written by hand is run as the cell asks it), besides one ``**variable`` (or
    ``**variable.attribute``), whose values are read in the kernel when the variable exists.
    A call under a condition or in a loop is left to its cell, which may ask it never or many
    times. Cells that are not Python (a magic) are skipped.
    """
    found: list[Expected] = []
    for source in sources:
        try:
            with _PARSING:
                tree = ast.parse(source)
        except (SyntaxError, SystemError):  # a magic; CPython's AST state, see _PARSING
            continue
        calls = [node for node in _always_run(tree) if _is_query(node)]
        for call in sorted(calls, key=lambda node: (node.lineno, node.col_offset)):
            found.extend(_literal(call))
    return found


# Where a call may run once, many times or never: its query is fetched when asked, if it is.
_SOMETIMES = (
    *(ast.If, ast.IfExp, ast.For, ast.While, ast.BoolOp, ast.Lambda),
    *(ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp),
)


def _always_run(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes under ``node`` outside conditions and loops (a condition itself included)."""
    for child in ast.iter_child_nodes(node):
        yield child
        if isinstance(child, (ast.If, ast.IfExp, ast.While)):
            yield from _always_run(child.test)
        elif not isinstance(child, _SOMETIMES):
            yield from _always_run(child)


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
    name, values, baseline, spread = call.args[0].value, {}, True, ()
    for keyword in call.keywords:
        if keyword.arg is None and not spread and (path := _path(keyword.value)):
            spread = path
        elif keyword.arg in (None, "promql") or not isinstance(keyword.value, ast.Constant):
            return []
        elif keyword.arg == "baseline":
            baseline = bool(keyword.value.value)
        else:
            values[keyword.arg] = keyword.value.value
    if not isinstance(name, str):
        return []
    return [(name, baseline, tuple(sorted(values.items())), spread)]


def _path(node: ast.expr) -> tuple[str, ...]:
    """``scope`` -> ("scope",), ``scope.values`` -> ("scope", "values"); () for anything else."""
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute) and (path := _path(node.value)):
        return (*path, node.attr)
    return ()


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
    its cell asks, which reports why. ``variables`` reads a variable spread into a query's
    values (the session's ``scope``), or None while it is not there: that query, and those
    after it, wait for the next one asked.
    """

    def __init__(
        self,
        expected: Iterable[Expected],
        fetch: Callable[[Ready], tuple[Fetched, list[Future[Any]]] | None],
        variables: Callable[[tuple[str, ...]], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self._waiting = deque(expected)
        self._fetch = fetch
        self._variables = variables or _session_variable
        self._fetched: list[tuple[Fetched, list[Future[Any]]]] = []

    def take(self, name: str, asked: Fetched) -> list[Future[Any]] | None:
        """The answers fetched ahead for query ``name`` as asked, or None; then more are
        fetched. A query asked before it could be fetched (its ``scope`` was set in the same
        cell) is fetched by its cell: it is no longer expected."""
        taken = None
        for index, (fetched, futures) in enumerate(self._fetched):
            if fetched == asked:
                for _, passed in self._fetched[:index]:  # expected, not asked: not needed
                    _cancel(passed)
                del self._fetched[: index + 1]
                taken = futures
                break
        if taken is None and self._waiting and self._waiting[0][:2] == (name, asked[2]):
            self._waiting.popleft()
        self.top_up()
        return taken

    def top_up(self) -> None:
        while self._waiting and len(self._fetched) < DEPTH:
            name, baseline, values, spread = self._waiting[0]
            if spread:
                if (found := self._variables(spread)) is None:
                    return  # not set yet: tried again when the next query is asked
                values = tuple(sorted({**found, **dict(values)}.items()))
            self._waiting.popleft()
            started = self._fetch((name, baseline, values))
            if started is not None:
                self._fetched.append(started)

    def stop(self) -> None:
        """Fetch nothing more (the source is down): what has not started is cancelled."""
        self._waiting.clear()
        for _, futures in self._fetched:
            _cancel(futures)
        self._fetched.clear()


def _session_variable(path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """``scope`` (or ``scope.values``) in the kernel's session, if it is a mapping by now."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    value = shell.user_ns.get(path[0]) if shell is not None else None
    for attribute in path[1:]:
        value = getattr(value, attribute, None)
    return value if isinstance(value, Mapping) else None


def _cancel(futures: list[Future[Any]]) -> None:
    for future in futures:
        future.cancel()  # a request already sent finishes; its answer is dropped
