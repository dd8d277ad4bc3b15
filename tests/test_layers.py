"""The package's shape: layers import downwards only, and no module-level import circle.

Read from the source with ``ast``, so a new module is checked the day it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "workbooks"

# Lowest first: a module may import its own layer and the ones before it, never one after.
LAYERS = (
    *("core", "archive", "notebook", "runbooks", "running", "service", "synthetic"),
    *("authoring", "cli"),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The workbooks modules ``path`` imports (``from workbooks.x import y`` counts y if it is
    a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = _modules()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:
            continue  # `if TYPE_CHECKING:` blocks
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("workbooks")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbooks"):
            base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in modules else base)
    return names


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None  # the package root and its shims (workbooks, workbooks.errors, __main__)
    return LAYERS.index(parts[1])


def test_every_module_sits_in_a_layer() -> None:
    loose = [
        name
        for name in _modules()
        if _layer(name) is None
        and name not in ("workbooks", "workbooks.errors", "workbooks.__main__")
    ]
    assert not loose, f"put these in one of the layers {LAYERS}: {loose}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_run_down_the_layers(module: str) -> None:
    own = _layer(module)
    if own is None:
        return
    upward = sorted(
        imported
        for imported in _imports(_modules()[module], top_level_only=False)
        if (layer := _layer(imported)) is not None and layer > own
    )
    assert not upward, f"{module} ({LAYERS[own]}) imports a higher layer: {upward}"


def test_no_import_circle_at_module_level() -> None:
    modules = _modules()
    graph = {
        name: _imports(path, top_level_only=True) & set(modules) for name, path in modules.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            circle = [*visiting[visiting.index(name) :], name]
            pytest.fail("import circle: " + " -> ".join(circle))
        visiting.append(name)
        for imported in sorted(graph[name]):
            # A package's __init__ importing its own submodules is how packages work.
            if not imported.startswith(name + "."):
                visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_old_entry_points_still_work() -> None:
    """Archived notebooks call these; they must keep working after the package moved."""
    import workbooks
    import workbooks.errors

    assert callable(workbooks.open_incident)
    assert workbooks.errors.WorkbooksError is workbooks.WorkbooksError
