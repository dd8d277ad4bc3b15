"""``workbook lint``: check runbook notebooks against the notebook contract.

Each rule reads the notebook as JSON (nothing runs) and reports problems as :class:`LintError`
values that name the notebook, the cell (index and id) and the fix. The rules are the contract of
``docs/design.md``: metadata, one parameters cell with the shared names, the six sections in
order, catalog queries that exist, clean cells, thin cells, and no secret anywhere.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbooks.authoring.skeleton import (
    PARAMETERS_TAG,
    SECTIONS,
    parameter_values,
)
from workbooks.core.durations import parse_duration
from workbooks.core.errors import ConfigError
from workbooks.notebook.catalog import Catalog
from workbooks.running.parameters import Parameters
from workbooks.running.routing import GROUPS

RULES = (
    "notebook",  # the file is a readable notebook
    "metadata",
    "parameters",
    "sections",
    "queries",
    "outputs",
    "thin",
    "secrets",
)

# What looks like a credential. Each pattern is narrow enough that prose about tokens
# ("set WORKBOOKS_PROMETHEUS_TOKEN") does not trip it; the value must be there.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a credential assigned in code",
        re.compile(
            r"""\b\w*(password|passwd|secret|token|api_?key|apikey)\w*["']?\s*[:=]\s*["'][^"'\s]{4,}""",
            re.IGNORECASE,
        ),
    ),
    ("user:password@ in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]+:[^\s/@]+@")),
    (
        "a credential in a URL query string",
        re.compile(
            r"[?&](access_token|token|api_?key|apikey|password|secret|sig)=[^&\s\"']+",
            re.IGNORECASE,
        ),
    ),
    ("an Authorization header value", re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,}")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("an AWS access key id", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)


@dataclass(frozen=True, kw_only=True)
class LintError:
    """One broken rule: where it is, what is wrong, and what to do about it."""

    notebook: str
    rule: str
    message: str
    fix: str
    cell_index: int | None = None
    cell_id: str | None = None

    @property
    def where(self) -> str:
        if self.cell_index is None:
            return self.notebook
        return f"{self.notebook}: cell {self.cell_index} (id {self.cell_id or '?'})"

    def __str__(self) -> str:
        return f"{self.where}: [{self.rule}] {self.message}. Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lint_notebooks(paths: Iterable[Path], *, catalog: Catalog | None = None) -> list[LintError]:
    """Every contract problem in ``paths``, notebook by notebook, in cell order."""
    catalog = catalog if catalog is not None else Catalog.load()
    errors: list[LintError] = []
    for path in paths:
        errors.extend(lint_notebook(path, catalog=catalog))
    return errors


def lint_notebook(path: Path, *, catalog: Catalog) -> list[LintError]:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = notebook["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [
            LintError(
                notebook=str(path),
                rule="notebook",
                message=f"cannot read it as a notebook ({exc})",
                fix="open and save it in JupyterLab, or recreate it with `workbook new`",
            )
        ]
    linter = _Linter(path, notebook, cells, catalog)
    return list(linter.run())


class _Linter:
    """One notebook's checks; each ``_check_*`` yields that rule's errors."""

    def __init__(self, path: Path, notebook: dict[str, Any], cells: list[Any], catalog: Catalog):
        self.path = path
        self.notebook = notebook
        self.cells = cells
        self.catalog = catalog

    def run(self) -> Iterator[LintError]:
        yield from self._check_metadata()
        yield from self._check_parameters()
        yield from self._check_sections()
        for index, cell in enumerate(self.cells):
            yield from self._check_cell(index, cell)

    def error(self, rule: str, message: str, fix: str, index: int | None = None) -> LintError:
        cell_id = None if index is None else self.cells[index].get("id")
        return LintError(
            notebook=str(self.path),
            rule=rule,
            message=message,
            fix=fix,
            cell_index=index,
            cell_id=cell_id,
        )

    # --- notebook-wide rules ---------------------------------------------------------------

    def _check_metadata(self) -> Iterator[LintError]:
        where = "in metadata.workbooks (JupyterLab: Edit > Notebook metadata)"
        meta = self.notebook.get("metadata", {}).get("workbooks")
        if not isinstance(meta, dict):
            yield self.error(
                "metadata",
                "metadata.workbooks is missing",
                f"add runbook, title, alerts, group and summary {where}",
            )
            return
        if meta.get("runbook") != self.path.stem:
            yield self.error(
                "metadata",
                f"runbook id {meta.get('runbook')!r} is not the file name {self.path.stem!r}",
                f'set "runbook": "{self.path.stem}" {where}, or rename the file',
            )
        for key in ("title", "summary"):
            if not isinstance(meta.get(key), str) or not meta[key].strip():
                yield self.error(
                    "metadata", f"{key} is missing or empty", f"set a one-line {key} {where}"
                )
        alerts = meta.get("alerts")
        named = isinstance(alerts, list) and all(isinstance(a, str) and a for a in alerts)
        if not (named and alerts):
            yield self.error(
                "metadata",
                f"alerts must be a non-empty list of alertnames, not {alerts!r}",
                f'set "alerts": ["YourAlertName"] {where}',
            )
        if meta.get("group") not in GROUPS:
            yield self.error(
                "metadata",
                f"group {meta.get('group')!r} is not one of {', '.join(GROUPS)}",
                f"set group to one of them {where}",
            )
        if "baseline" in meta:  # optional: the runbook's own default baseline
            try:
                parse_duration(str(meta["baseline"]))
            except ConfigError as exc:
                yield self.error(
                    "metadata",
                    f"baseline: {exc}",
                    f'set "baseline" to a duration such as "7d", or remove it {where}',
                )

    def _check_parameters(self) -> Iterator[LintError]:
        tagged = [i for i, cell in enumerate(self.cells) if PARAMETERS_TAG in _tags(cell)]
        fix_tag = "tag exactly one code cell 'parameters' (View > Property Inspector > tags)"
        if not tagged:
            yield self.error("parameters", "no cell is tagged 'parameters'", fix_tag)
            return
        for extra in tagged[1:]:
            yield self.error(
                "parameters", "a second cell is tagged 'parameters'", "remove the tag", extra
            )
        index = tagged[0]
        cell = self.cells[index]
        expected = list(Parameters.names())
        try:
            values = parameter_values(_source(cell)) if cell["cell_type"] == "code" else {}
        except (ValueError, SyntaxError) as exc:
            yield self.error(
                "parameters",
                f"the parameters cell must assign plain literals ({exc})",
                "use literal defaults only (strings, numbers, lists, dicts)",
                index,
            )
            return
        if list(values) != expected:
            yield self.error(
                "parameters",
                f"the parameters cell assigns {list(values)}, not the shared names in order",
                "assign exactly these names, in this order: " + ", ".join(expected),
                index,
            )
        for name, value in values.items():
            for text in _strings(value):
                for kind, pattern in SECRET_PATTERNS:
                    if pattern.search(text):
                        yield self.error(
                            "secrets",
                            f"the default of {name} holds {kind}",
                            "no secret is ever a parameter (papermill writes them into the "
                            "artifact); credentials come from the environment or the config",
                            index,
                        )

    def _check_sections(self) -> Iterator[LintError]:
        found: dict[str, int] = {}
        for index, cell in enumerate(self.cells):
            if cell.get("cell_type") != "markdown":
                continue
            for line in _source(cell).splitlines():
                for heading in SECTIONS:
                    if line.strip() == heading or line.startswith(heading + " "):
                        found.setdefault(heading, index)
        for number, heading in enumerate(SECTIONS):
            if heading not in found:
                after = f" after the {SECTIONS[number - 1]!r} section" if number else ""
                yield self.error(
                    "sections",
                    f"section {heading!r} is missing",
                    f"add a markdown cell starting with {heading!r}{after}",
                )
        present = [heading for heading in SECTIONS if heading in found]
        ordered = sorted(present, key=found.__getitem__)
        if present != ordered:
            first_wrong = next(b for a, b in zip(present, ordered, strict=True) if a != b)
            yield self.error(
                "sections",
                "the sections are out of order: " + ", ".join(ordered),
                "move them into the runbook order 1. to 6.",
                found[first_wrong],
            )

    # --- per-cell rules --------------------------------------------------------------------

    def _check_cell(self, index: int, cell: Any) -> Iterator[LintError]:
        source = _source(cell)
        for kind, pattern in SECRET_PATTERNS:
            if pattern.search(source):
                yield self.error(
                    "secrets",
                    f"the cell holds {kind}",
                    "remove it; credentials come from the environment (WORKBOOKS_PROMETHEUS_"
                    "TOKEN ...) or the config file, never a notebook",
                    index,
                )
        if cell.get("cell_type") != "code":
            return
        if cell.get("outputs"):
            yield self.error(
                "outputs",
                "the cell has stored outputs",
                "clear them (Edit > Clear Outputs of All Cells) before committing",
                index,
            )
        if cell.get("execution_count") is not None:
            yield self.error(
                "outputs",
                "the cell has an execution count",
                "clear outputs before committing (the count goes with them)",
                index,
            )
        try:
            tree = ast.parse(_without_magics(source))
        except SyntaxError as exc:
            message = f"the cell is not valid Python ({exc.msg}, line {exc.lineno})"
            yield self.error("thin", message, "fix the syntax (run the cell to see it)", index)
            return
        yield from self._check_thin(index, tree)
        yield from self._check_queries(index, tree)

    def _check_thin(self, index: int, tree: ast.AST) -> Iterator[LintError]:
        kinds = {
            ast.FunctionDef: "def",
            ast.AsyncFunctionDef: "async def",
            ast.ClassDef: "class",
            ast.Lambda: "lambda",
        }
        for node in ast.walk(tree):
            kind = kinds.get(type(node))
            if kind:
                yield self.error(
                    "thin",
                    f"the cell defines a {kind} (line {getattr(node, 'lineno', '?')})",
                    "move the logic into the runbook's module in lib/workbooks/runbooks/ with a "
                    "unit test, and call it from the cell",
                    index,
                )

    def _check_queries(self, index: int, tree: ast.AST) -> Iterator[LintError]:
        for name in _query_names(tree):
            if name not in self.catalog:
                yield self.error(
                    "queries",
                    f"query {name!r} is not in the catalog",
                    f"add {name!r} to lib/workbooks/notebook/queries/{self.path.stem}.yaml (or "
                    "under queries: in the config), or use a known name",
                    index,
                )


def _query_names(tree: ast.AST) -> Iterator[str]:
    """Names passed as the first argument of ``something.query("name", ...)``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "query"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _without_magics(source: str) -> str:
    # IPython magics and shell escapes are not Python; keep the line count for error messages.
    return "\n".join(
        "pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def _tags(cell: Any) -> Sequence[str]:
    return cell.get("metadata", {}).get("tags", [])


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a parameter default, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
            if isinstance(key, str) and isinstance(item, str):
                yield f"{key} = {item!r}"  # so {"password": "x"} reads as assigned
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
