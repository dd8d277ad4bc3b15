"""The query catalog: every PromQL expression a runbook uses, under a logical name.

Defaults live in the ``queries/`` folder beside this module: ``common.yaml`` for entries several
runbooks share, one file per runbook for the rest, so runbooks written in parallel never edit one
shared file. A name may be defined once across the files. A team maps its own metric names under
``queries:`` in its config file; notebooks only ever name a query. ``{placeholders}`` are filled
from the alert's labels, escaped for a PromQL string literal, so a label value can never change
the shape of a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from workbooks.core.config import read_yaml
from workbooks.core.errors import ConfigError, QueryFailedError

# `{name}` with an identifier inside; PromQL's own braces always hold a matcher (`{a="b"}`).
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, kw_only=True)
class CatalogQuery:
    name: str
    query: str
    title: str
    unit: str | None = None

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_PLACEHOLDER.findall(self.query)))

    def render(self, values: Mapping[str, Any]) -> str:
        """The PromQL text with every placeholder filled; a missing one is a clear error."""
        missing = [name for name in self.placeholders if name not in values]
        if missing:
            raise QueryFailedError(
                f"query {self.name!r} needs {', '.join(missing)}, which the alert's labels do not "
                f"carry; pass it: incident.query({self.name!r}, {missing[0]}=...)"
            )
        return _PLACEHOLDER.sub(lambda match: self._fill(match, values), self.query)

    def _fill(self, match: re.Match[str], values: Mapping[str, Any]) -> str:
        name, value = match.group(1), values[match.group(1)]
        if _inside_string(self.query, match.start()):
            return _escape(value)
        # Outside a string literal only a number or a duration may stand (``{quantile}``):
        # anything else could change the shape of the query.
        if not _BARE_VALUE.fullmatch(str(value)):
            raise QueryFailedError(
                f"query {self.name!r}: {name}={value!r} must be a number or a duration here"
            )
        return str(value)

    def render_title(self, values: Mapping[str, Any]) -> str:
        return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), self.title)


_BARE_VALUE = re.compile(r"-?\d+(\.\d+)?([eE]-?\d+)?|(\d+(ms|s|m|h|d|w|y))+")


def _inside_string(query: str, position: int) -> bool:
    """Whether ``position`` falls inside a double-quoted PromQL string literal."""
    inside, escaped = False, False
    for char in query[:position]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def _escape(value: Any) -> str:
    """A value safe inside a double-quoted PromQL string (and harmless as a number)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Catalog:
    """Logical query names to PromQL, defaults overlaid by a config's ``queries:`` block."""

    def __init__(self, entries: Mapping[str, CatalogQuery]) -> None:
        self._entries = dict(entries)

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, *, directory: Path | None = None
    ) -> Catalog:
        """The defaults (the package's ``queries/``, or ``directory``) with ``overrides`` on top."""
        entries = dict(_defaults() if directory is None else read_query_files(directory))
        for name, override in (overrides or {}).items():
            base = entries.get(name)
            if isinstance(override, str):
                override = {"query": override}
            if not isinstance(override, Mapping) or not set(override) <= {"query", "title", "unit"}:
                raise ConfigError(
                    f"queries.{name} in the config must be a PromQL string or a mapping with "
                    "query, title and unit"
                )
            if base is None:
                if "query" not in override:
                    raise ConfigError(f"queries.{name} is new, so it needs a query")
                base = CatalogQuery(name=name, query="", title=name)
            entries[name] = replace(
                base, **{k: (None if v is None else str(v)) for k, v in override.items()}
            )
        return cls(entries)

    def __getitem__(self, name: str) -> CatalogQuery:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise QueryFailedError(
                f"no query named {name!r} in the catalog; known: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)


QUERIES_DIR = "queries"


@cache
def _defaults() -> dict[str, CatalogQuery]:
    return read_query_files(resources.files("workbooks.notebook").joinpath(QUERIES_DIR))


def read_query_files(directory: Traversable | Path) -> dict[str, CatalogQuery]:
    """Every entry of every ``*.yaml`` in ``directory``; a name defined twice is an error."""
    entries: dict[str, CatalogQuery] = {}
    defined_in: dict[str, str] = {}
    files = sorted(
        (item for item in directory.iterdir() if item.name.endswith(".yaml")),
        key=lambda item: item.name,
    )
    for item in files:
        raw = read_yaml(item.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{QUERIES_DIR}/{item.name} must map query names to entries (title, unit, query)"
            )
        for name, entry in raw.items():
            if name in defined_in:
                raise ConfigError(
                    f"query {name!r} is defined twice: in {QUERIES_DIR}/{defined_in[name]} and in "
                    f"{QUERIES_DIR}/{item.name}; keep one (shared entries go in common.yaml)"
                )
            if not isinstance(entry, Mapping) or "query" not in entry:
                raise ConfigError(
                    f"{QUERIES_DIR}/{item.name}: entry {name!r} needs a query (and a title, unit)"
                )
            defined_in[name] = item.name
            entries[name] = CatalogQuery(
                name=name,
                query=" ".join(str(entry["query"]).split()),
                title=str(entry.get("title", name)),
                unit=entry.get("unit"),
            )
    return entries
