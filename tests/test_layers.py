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


def _parse_all() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in _modules().values()}


# Parsed once, while the test module is collected: Python 3.11.7's ast.parse can fail with
# "AST constructor recursion depth mismatch" after other tests have run threads (cpython#106905,
# pytest#10763), and collection comes before any test runs.
TREES = _parse_all()


def _tree(path: Path) -> ast.Module:
    return TREES[path] if path in TREES else ast.parse(path.read_text(encoding="utf-8"))


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The workbooks modules ``path`` imports (``from workbooks.x import y`` counts y if it is
    a module)."""
    tree = _tree(path)
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


# --- one module, one job: public seams and modest sizes -----------------------------------------

# Known offenders, each being split or untangled by its owner: shrink this list, never grow it.
PRIVATE_IMPORT_ALLOWED: set[str] = set()
MAX_LINES = 420
OVERSIZE_ALLOWED: set[str] = set()


def _private_uses(module: str, path: Path) -> list[str]:
    """``from workbooks.x import _name`` and ``x._name`` on an imported workbooks module."""
    tree = _tree(path)
    modules = _modules()
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> the workbooks module it is
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workbooks"):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                if target in modules:
                    aliases[alias.asname or alias.name] = target
                elif alias.name.startswith("_") and node.module != module:
                    found.append(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workbooks") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and aliases[node.value.id] != module
        ):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return sorted(set(found))


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_a_private_name_from_another(module: str) -> None:
    used = _private_uses(module, _modules()[module])
    if module in PRIVATE_IMPORT_ALLOWED:
        assert used, f"{module} no longer reaches into privates: drop it from the allow-list"
        return
    assert not used, (
        f"{module} uses private names of other modules: {used}; make them public (no leading "
        "underscore) where they are defined, or move the code that needs them there"
    )


def test_the_private_import_check_catches_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(
        "from workbooks.archive.store import _read_record, Archive\n"
        "from workbooks.archive import store\n"
        "store._SAFE_ID\n"
        "store.Archive\n"
    )
    assert _private_uses("workbooks.cli.sample", path) == [
        "workbooks.archive.store._SAFE_ID",
        "workbooks.archive.store._read_record",
    ]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_is_over_420_lines(module: str) -> None:
    lines = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    if module in OVERSIZE_ALLOWED:
        assert lines > MAX_LINES, f"{module} is {lines} lines now: drop it from the allow-list"
        return
    assert lines <= MAX_LINES, (
        f"{module} is {lines} lines; split it by job (one module, one job: 100-400 lines)"
    )
