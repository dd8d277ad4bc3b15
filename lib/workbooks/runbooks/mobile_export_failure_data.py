"""mobile-export-failure: the thresholds, the alert's scope, and the levels the steps compare.

The export pipeline's series carry no `service`: it runs as a CI job and pushes through a
Pushgateway, so they carry the push `job` and the `model`. :func:`scope` turns the alert's
labels into the matchers every query of ``queries/mobile-export-failure.yaml`` uses.
:func:`levels` is the comparison the steps share: each combination of labels (a target, a
target and version, a target and reason) since the onset against the same span a day earlier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from workbooks.core.findings import Finding
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "mobile-export-failure",
    # Share of a target's runs failing, above its own baseline, in points of 0..1: a target
    # whose runs time out half the time as usual has not moved.
    failure_rise_critical=0.25,
    failure_rise_warning=0.05,
    # Artifact size as a share of the target's budget: over it fails the export.
    budget_share_critical=1.0,
    budget_share_warning=0.95,
    # Parity error (largest absolute difference from the reference outputs): the tolerance.
    parity_error_critical=0.05,
    parity_error_warning=0.01,
    # A toolchain change explains failures that began at most this long after it (minutes).
    toolchain_lead_minutes=30,
    # A toolchain is to blame when at least this many model versions broke on its target.
    toolchain_versions_broken=2,
)
SUBJECT = "mobile export failures"
ANY = ".+"
# RE2 metacharacters: escaped so that a label value matches itself and nothing else.
_REGEX_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def literal(value: str) -> str:
    """A regex matching exactly ``value`` (``torch.onnx`` → ``torch\\.onnx``), readable."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def scope(incident: Incident) -> dict[str, str]:
    """The matchers every query takes: the alert's `model` and `job`, or any when it lacks one.

    An alert without `model` reads every model the pipeline exports (the breakdowns then mix
    them), and says so in a warning: the alert rule should keep `model` in its `by (...)`.
    """
    labels = incident.labels
    found = {"model_re": ANY, "job_re": ANY}
    for label in ("model", "job"):
        value = labels.get(label, "")
        if value:
            found[f"{label}_re"] = literal(value)
    model, job = labels.get("model"), labels.get("job")
    steps.checked(
        incident, f"scope: model {model or 'any (no label)'}, push job {job or 'any (no label)'}"
    )
    if not model:
        incident.record(
            Finding(
                severity="warning",
                title="The alert carries no `model` label: this run reads every model the "
                "export pipeline pushes",
                detail="Targets and versions below may mix several models.",
                subject={"alert": incident.alert_name},
                recommendation="Keep `model` (and the push `job`) in the alert rule's "
                "`sum by (...)`, or re-run with labels={'model': ...}.",
            )
        )
    return found


@dataclass(frozen=True)
class Failing:
    """What section 3.1 found, for the cause steps: since when, and which targets moved.

    ``since`` is the onset found, else the alert's start less its `for:`;

    ``rises`` maps a target to its failure share's rise in points over its baseline;
    ``new_versions`` are versions exported in the window and not a day earlier.
    """

    since: pd.Timestamp
    onset: pd.Timestamp | None = None
    rises: dict[str, float] = field(default_factory=dict)
    new_versions: tuple[str, ...] = ()


def since_of(incident: Incident, onset: pd.Timestamp | None) -> pd.Timestamp:
    """Where "now" starts: the onset found, else the alert's start less its `for:`."""
    if onset is not None:
        return onset
    return pd.Timestamp(incident.starts_at) - pd.Timedelta(minutes=5)


def levels(
    result: QueryResult,
    labels: list[str],
    *,
    since: pd.Timestamp,
    until: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Per combination of ``labels``: median since ``since`` (``current``), the same span a day
    earlier (``baseline``, NaN for a new combination), the ``last`` value and the ``first``
    time it was seen. Missing label values read as "" and 0/0 shares (no runs) are skipped."""
    columns = [*labels, "current", "baseline", "last", "first"]
    if result.empty:
        return pd.DataFrame(columns=columns)
    now = _tidy(result.current, labels)
    before = _tidy(result.baseline, labels) if result.baseline is not None else now[:0]
    end = until if until is not None else now["timestamp"].max()
    inside = now[(now["timestamp"] >= since) & (now["timestamp"] <= end)]
    then = before[(before["timestamp"] >= since) & (before["timestamp"] <= end)]
    grouped = now.sort_values("timestamp").groupby(labels)
    table = pd.concat(
        [
            inside.groupby(labels)["value"].median().rename("current"),
            then.groupby(labels)["value"].median().rename("baseline"),
            grouped["value"].last().rename("last"),
            grouped["timestamp"].first().rename("first"),
        ],
        axis=1,
    ).reset_index()
    return table[columns]


def _tidy(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    tidy = frame.copy()
    for label in labels:
        tidy[label] = tidy[label].fillna("").astype(str) if label in tidy else ""
    tidy["value"] = pd.to_numeric(tidy["value"], errors="coerce")
    return tidy[tidy["value"].notna()]
