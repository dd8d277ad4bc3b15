"""Findings: what a workbook concluded, in the shape DESIGN.md fixes.

A finding is shown in the notebook as markdown and carried in the same output as a JSON MIME
bundle (``application/vnd.workbooks.finding+json``), so an archived notebook is its own record:
:func:`findings_from_notebook` reads them back without re-running anything.

Contract version 2 (``"schema": 2`` in the JSON): ``subject`` values are a string or, when several
share the finding, a list of strings (``{"instance": ["api-1", "api-3"]}``); a finding that names
a likely cause carries its kind in ``cause`` (one of :data:`CAUSES`). ``likely_cause`` stays in
the JSON, derived from ``cause``, for readers of version 1; a version-1 finding with only
``likely_cause: true`` reads back with ``cause="unknown"``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FINDING_MIME = "application/vnd.workbooks.finding+json"
FINDING_SCHEMA = 2
SUMMARY_MIME = "application/vnd.workbooks.summary+json"

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
SEVERITY_ICONS: dict[str, str] = {"critical": "🔴", "warning": "🟠", "info": "🔵"}

# What kind of cause a finding names. Small on purpose: a notification, a report or a search
# groups by it. "unknown" is for findings written before causes had kinds.
Cause = Literal[
    "rollout",  # a new model/app/build version reached the affected units
    "traffic",  # load or request mix changed (volume, a client, a route's share)
    "instance",  # one or a few hosts/pods/processes misbehave (leak, bad node)
    "dependency",  # something the service calls (store, downstream API, a route's backend)
    "limit",  # a quota or resource ceiling is reached (memory limit, disk, connections)
    "data",  # inputs or eval data changed (one modality, one eval set, one client's data)
    "config",  # a configuration change
    "external",  # outside the service (network, provider, clients' devices)
    "security",  # abuse or unauthorised access
    "capacity",  # the fleet is too small for the load it has
    "unknown",  # a cause of no recorded kind (version-1 findings)
]
CAUSES: tuple[str, ...] = Cause.__args__  # type: ignore[attr-defined]
SubjectValue = str | list[str]


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One conclusion of a workbook.

    ``subject`` names what the finding is about: ``{"route": "/v1/vision"}``, or a list when
    several values share it, ``{"instance": ["api-1", "api-3"]}`` (a one-item list reads as its
    string). ``cause`` marks a finding that names a culprit rather than restating the symptom,
    with its kind from :data:`CAUSES`; it ranks first within its severity. ``likely_cause`` is
    derived from it (``cause is not None``); passing ``likely_cause=True`` alone, as version-1
    code does, gives ``cause="unknown"``.
    """

    severity: Severity
    title: str
    detail: str = ""
    subject: dict[str, SubjectValue] = field(default_factory=dict)
    metric: str | None = None
    observed: float | None = None
    baseline: float | None = None
    unit: str | None = None
    recommendation: str | None = None
    cause: Cause | None = None
    likely_cause: bool = False

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITY_RANK:
            choices = ", ".join(SEVERITIES)
            raise ValueError(f"severity must be one of {choices}, not {self.severity!r}")
        # JSON has no NaN: a missing number is None.
        for name in ("observed", "baseline"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                object.__setattr__(self, name, None)
            elif value is not None:
                object.__setattr__(self, name, float(value))
        subject = {str(k): _subject_value(v) for k, v in self.subject.items()}
        object.__setattr__(self, "subject", subject)
        if self.cause is None and self.likely_cause:
            object.__setattr__(self, "cause", "unknown")
        if self.cause is not None and self.cause not in CAUSES:
            raise ValueError(f"cause must be one of {', '.join(CAUSES)}, not {self.cause!r}")
        object.__setattr__(self, "likely_cause", self.cause is not None)

    def subject_values(self, label: str) -> list[str]:
        """The subject's values for ``label`` as a list (empty when the label is absent)."""
        value = self.subject.get(label)
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": FINDING_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Read a finding of any schema version (unknown keys, such as ``schema``, are ignored)."""
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_markdown(self) -> str:
        """Readable markdown; text is HTML-escaped since label values come from outside."""
        icon = SEVERITY_ICONS[self.severity]
        lines = [f"**{icon} {self.severity.upper()}: {_escape(self.title)}**"]
        if self.subject:
            subject = ", ".join(
                f"`{_escape(k)}={_escape(subject_text(v))}`" for k, v in self.subject.items()
            )
            lines.append(f"*About:* {subject}")
        if self.detail:
            lines.append(_escape(self.detail))
        if self.observed is not None:
            numbers = f"*Observed:* {format_value(self.observed, self.unit)}"
            if self.baseline is not None:
                numbers += f" · *baseline:* {format_value(self.baseline, self.unit)}"
            lines.append(numbers)
        if self.recommendation:
            lines.append(f"*Next:* {_escape(self.recommendation)}")
        return "\n\n".join(lines)

    def mime_bundle(self) -> dict[str, Any]:
        return {"text/markdown": self.to_markdown(), FINDING_MIME: self.to_dict()}


def _subject_value(value: Any) -> SubjectValue:
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(str(v) for v in value) if isinstance(value, (set, frozenset)) else value
        values = [str(v) for v in items]
        return values[0] if len(values) == 1 else values
    return str(value)


def subject_text(value: SubjectValue) -> str:
    """A subject value as one line of text: a list joined with ", "."""
    return value if isinstance(value, str) else ", ".join(value)


def _escape(text: str) -> str:
    return html.escape(str(text), quote=False)


def format_value(value: float, unit: str | None) -> str:
    """A number with its unit, at a precision a person reads at a glance."""
    if unit == "seconds":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "bytes":
        for suffix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= size:
                return f"{value / size:.2f} {suffix}"
        return f"{value:.0f} B"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "percent":
        return f"{value:.1f}%"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit else text


def ranked(findings: Iterable[Finding]) -> list[Finding]:
    """Most important first: by severity, then causes before symptoms, then in recorded order."""
    indexed = list(enumerate(findings))
    indexed.sort(
        key=lambda pair: (_SEVERITY_RANK[pair[1].severity], not pair[1].likely_cause, pair[0])
    )
    return [finding for _, finding in indexed]


def summary_markdown(
    findings: Iterable[Finding], *, limit: int = 5, heading: str = "Summary"
) -> str:
    """The Summary cell: the top findings, one line each, worst first."""
    top = ranked(findings)
    if not top:
        return f"## {heading}\n\nNo findings were recorded."
    lines = [f"## {heading}", ""]
    for finding in top[:limit]:
        # Titles carry the number that backs them ("rose 4.2x (0.9 s → 3.8 s)").
        icon = SEVERITY_ICONS[finding.severity]
        title = _escape(finding.title)
        lines.append(f"- {icon} **{finding.severity}**: {title}")
    if len(top) > limit:
        lines.append(f"- … and {len(top) - limit} more below")
    return "\n".join(lines)


def findings_from_notebook(notebook: Mapping[str, Any]) -> list[Finding]:
    """Every finding carried in a notebook's outputs, in the order they were recorded."""
    found: list[Finding] = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data") or {}
            if FINDING_MIME in data:
                found.append(Finding.from_dict(data[FINDING_MIME]))
    return found
