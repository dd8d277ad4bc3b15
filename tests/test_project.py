"""The project's own promises: pip and conda agree, the README tells the truth."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import yaml
from packaging.requirements import Requirement

from workbooks.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {Requirement(text).name.lower(): str(Requirement(text).specifier) for text in wanted}


def _conda_requirements() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pinned = {}
    for entry in environment["dependencies"]:
        if not isinstance(entry, str) or entry in ("pip",) or entry.startswith("python"):
            continue
        requirement = Requirement(entry)
        pinned[requirement.name.lower()] = str(requirement.specifier)
    return pinned


def test_environment_yml_is_in_step_with_pyproject() -> None:
    assert _conda_requirements() == _pyproject_requirements()


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_quickstart_is_the_two_make_commands() -> None:
    quickstart = _readme().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(make \w+)\s*$", quickstart, flags=re.MULTILINE)
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_cli_command_is_documented_and_has_help() -> None:
    readme = _readme()
    for name, command in main.commands.items():
        assert f"workbook {name}" in readme, f"README does not mention `workbook {name}`"
        assert command.help or command.short_help, f"`workbook {name}` has no help text"
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f"workbook {name} {sub}" in readme


def test_what_threads_import_late_is_not_rewritten_by_pytest() -> None:
    """pytest parses a module's source to rewrite its asserts when it is first imported, in
    whatever thread imports it, and Python 3.11.7's ast.parse is not safe in two threads at once
    (cpython#106905). A served page imports anyio's file module late, in uvicorn's thread: it
    must not go through pytest, as it did while pytest autoloaded anyio's plugin (pyproject)."""
    import anyio._core._fileio

    assert type(anyio._core._fileio.__loader__).__name__ != "AssertionRewritingHook"
