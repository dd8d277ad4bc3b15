"""docs/metrics.md, the metric contract, kept true against the query catalog and the runbooks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbooks.notebook.catalog import Catalog
from workbooks.running.routing import load_runbooks

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
# A metric in PromQL: a name right before a `{selector}` (functions and `by (...)` are not).
SELECTED = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _documented(metric: str) -> bool:
    names = {metric}
    for suffix in HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            names.add(metric.removesuffix(suffix))
            names.add(metric.removesuffix(suffix) + "_bucket")
    return any(f"`{name}" in DOC for name in names)


def _catalog_metrics() -> dict[str, set[str]]:
    catalog = Catalog.load()
    return {name: set(SELECTED.findall(catalog[name].query)) for name in catalog.names()}


@pytest.mark.parametrize("query", sorted(_catalog_metrics()))
def test_every_metric_the_catalog_reads_is_in_the_contract(query: str) -> None:
    missing = sorted(m for m in _catalog_metrics()[query] if not _documented(m))
    assert not missing, f"catalog query {query} reads {missing}: document them in docs/metrics.md"


def test_every_runbook_has_its_section() -> None:
    headings = re.findall(r"^###? (.+)$", DOC, re.M)
    covered = {part.strip() for heading in headings for part in heading.split(",")}
    missing = sorted(set(load_runbooks(ROOT / "notebooks")) - covered)
    assert not missing, f"docs/metrics.md has no section for {missing}"
