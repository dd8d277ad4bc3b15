"""OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``: families, groups, values.

A `Family` is one metric family (name, type, help) and the function that writes its series for
one fleet; a `Group` is series written together, timestamp by timestamp (a histogram's buckets,
count and sum). `render` puts every scenario's groups of a family under one header, as
OpenMetrics requires; `render_spans` cuts that text by time, one text per TSDB block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from workbooks.synthetic.scenarios.fleet import Fleet


class Group(NamedTuple):
    """Series written together, timestamp by timestamp."""

    prefixes: list[str]  # 'name{labels}' per series
    values: list[list[str]]  # formatted values, one list per series
    times: list[str]  # formatted timestamps shared by the series


@dataclass(frozen=True)
class Family:
    """One metric family and how to write its series for a fleet."""

    name: str  # the OpenMetrics family name (a counter's without ``_total``)
    type: str  # counter, gauge, histogram
    help: str
    series: Callable[[Fleet], list[Group]]


def render(blocks: Iterable[tuple[Family, list[Group]]]) -> str:
    """The text of every (family, groups) block, one header per family, ending with # EOF."""
    return render_spans(blocks, span_seconds=None).get(0, "# EOF\n")


def render_spans(
    blocks: Iterable[tuple[Family, list[Group]]], *, span_seconds: int | None
) -> dict[int, str]:
    """:func:`render`'s text cut by time: {span number: a whole OpenMetrics text}.

    Span ``n`` holds the samples from ``n * span_seconds`` (inclusive) to the next span, with
    the headers of the families it has samples of. ``None``: one span, number 0.
    """
    # OpenMetrics forbids interleaving families, so all scenarios' series of a family go under
    # one header; each series' samples stay in time order, which is all promtool needs.
    by_name: dict[str, tuple[Family, list[Group]]] = {}
    for family, groups in blocks:
        by_name.setdefault(family.name, (family, []))[1].extend(groups)
    spans: dict[int, list[str]] = {}
    for family, groups in by_name.values():
        header = [f"# TYPE {family.name} {family.type}", f"# HELP {family.name} {family.help}"]
        started: set[int] = set()
        for prefixes, values, times in groups:
            for index, timestamp in enumerate(times):
                span = int(float(timestamp)) // span_seconds if span_seconds else 0
                lines = spans.setdefault(span, [])
                if span not in started:
                    started.add(span)
                    lines += header
                lines.extend(
                    f"{prefix} {series[index]} {timestamp}"
                    for prefix, series in zip(prefixes, values, strict=True)
                )
    return {span: "\n".join([*lines, "# EOF\n"]) for span, lines in sorted(spans.items())}


def ints(values: np.ndarray) -> list[str]:
    """Values rounded down: keeps counters monotonic and a histogram's buckets cumulative."""
    return [str(v) for v in np.floor(values).astype(np.int64).tolist()]


def fixed(values: np.ndarray, digits: int) -> list[str]:
    return [f"{v:.{digits}f}" for v in values.tolist()]


def format_seconds(timestamp: float) -> str:
    # OpenMetrics timestamps are seconds; milliseconds would land in the year 58,000.
    rounded = round(timestamp, 3)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:.3f}"


def escape(value: str) -> str:
    """A label value as it goes between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
