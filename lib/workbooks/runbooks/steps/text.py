"""How steps write numbers into titles: "0.9 s → 3.8 s", "4.2x", "-5.8 points", "a, b"."""

from __future__ import annotations

import math
from collections.abc import Sequence

from workbooks.core.findings import format_value


def join(values: Sequence[str]) -> str:
    """Label values in a sentence: ``api-1, api-3``."""
    return ", ".join(str(v) for v in values)


def fill(template: str, values: Sequence[str]) -> str:
    """A recommendation for the culprits: ``{values}`` as :func:`join` writes them, ``{it}`` as
    "it" or "them" and ``{its}`` as "its" or "their": "Drain api-1, api-3 and replace them"."""
    many = len(values) > 1
    return (
        template.replace("{values}", join(values))
        .replace("{its}", "their" if many else "its")
        .replace("{it}", "them" if many else "it")
    )


def plural(label: str, count: int) -> str:
    """``route`` or ``routes``; ``instance`` or ``instances``; ``modality`` or ``modalities``."""
    if count == 1:
        return label
    return f"{label[:-1]}ies" if label.endswith("y") else f"{label}s"


def change_text(current: float | None, baseline: float | None, unit: str | None) -> str:
    """``0.9 s → 3.8 s`` style, tolerant of missing numbers."""
    if current is None or baseline is None or math.isnan(current) or math.isnan(baseline):
        return "no baseline to compare"
    return f"{format_value(baseline, unit)} → {format_value(current, unit)}"


def ratio_text(ratio: float | None) -> str:
    """``4.2x``, or ``n/a`` without a number."""
    if ratio is None or not math.isfinite(ratio):
        return "n/a"
    return f"{ratio:.1f}x"


def points_text(delta: float | None, *, signed: bool = True) -> str:
    """A change of a 0..1 ratio in points: ``-5.8 points`` (``signed=False``: ``5.8 points``)."""
    if delta is None or not math.isfinite(delta):
        return "n/a"
    return f"{delta * 100:+.1f} points" if signed else f"{delta * 100:.1f} points"


def change_of(value: float | None, measure: str, unit: str | None = None) -> str:
    """A change as the steps measure it: a ratio (``2.9x``), or a delta in ``unit`` (a 0..1
    ``ratio`` unit reads in points: ``5.8 points``)."""
    if measure == "ratio":
        return ratio_text(value)
    if unit == "ratio":
        return points_text(value, signed=False)
    if value is None or not math.isfinite(value):
        return "n/a"
    return format_value(value, unit)
