"""The twelve parameters every runbook notebook takes, built in one place.

The runner (an alert), ``workbook open`` (an alert or a moment) and the notebook skeleton
(``workbook new``, the committed notebooks' defaults) all build a :class:`Parameters`; nothing
else lists the names. No secret is ever a parameter: papermill writes them into the artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from workbooks.core.alert import Alert, AlertGroup
from workbooks.core.findings import SEVERITIES

# The baseline when neither the caller nor the runbook (metadata.workbooks.baseline) names one.
DEFAULT_BASELINE = "1d"


@dataclass(frozen=True, kw_only=True)
class Parameters:
    """A runbook's parameters cell, in the order DESIGN.md's notebook contract gives."""

    alert_name: str
    severity: str = "warning"
    status: str = "firing"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    ends_at: str = ""
    group_key: str = ""
    fingerprints: list[str] = field(default_factory=list)
    lookback: str = "2h"
    baseline: str = "1d"
    source: str = "demo"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(item.name for item in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cell_source(self) -> str:
        """The text of a notebook's ``parameters`` cell holding these values as defaults."""
        lines = ["# Parameters: papermill replaces this cell's values. Never put a secret here."]
        lines += [f"{name} = {value!r}" for name, value in self.to_dict().items()]
        return "\n".join(lines)

    @classmethod
    def from_alerts(
        cls,
        alerts: Sequence[Alert],
        group: AlertGroup,
        *,
        source: str,
        lookback: str = "2h",
        baseline: str = "1d",
    ) -> Parameters:
        """The parameters of one run, from the alerts of a group routed to the same runbook.

        Severity is the worst of the alerts', labels the ones they share, the start the earliest.
        """
        if not alerts:
            raise ValueError("no alerts to build parameters from")
        known = [alert.severity for alert in alerts if alert.severity in SEVERITIES]
        firing = any(alert.status == "firing" for alert in alerts)
        labels = dict(alerts[0].labels)
        for alert in alerts[1:]:
            labels = {key: value for key, value in labels.items() if alert.labels.get(key) == value}
        ends = [alert.ends_at for alert in alerts if alert.ends_at is not None]
        return cls(
            alert_name=alerts[0].name,
            severity=min(known, key=SEVERITIES.index) if known else "warning",
            status="firing" if firing else "resolved",
            labels=labels,
            annotations=dict(alerts[0].annotations),
            starts_at=iso(min(alert.starts_at for alert in alerts)),
            ends_at="" if firing or not ends else iso(max(ends)),
            group_key=group.group_key,
            fingerprints=[alert.fingerprint for alert in alerts],
            lookback=lookback,
            baseline=baseline,
            source=source,
        )

    @classmethod
    def at(
        cls,
        moment: datetime,
        *,
        alert_name: str,
        labels: Mapping[str, str],
        source: str,
        lookback: str = "2h",
        baseline: str = "1d",
    ) -> Parameters:
        """An investigation of a moment rather than an alert (``workbook open --at``)."""
        return cls(
            alert_name=labels.get("alertname") or alert_name,
            severity=labels.get("severity", "warning"),
            labels=dict(labels),
            starts_at=iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC)),
            lookback=lookback,
            baseline=baseline,
            source=source,
        )


PARAMETER_NAMES = Parameters.names()


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, as Alertmanager writes it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
