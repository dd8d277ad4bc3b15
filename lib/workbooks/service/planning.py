"""Splitting a delivery into runs: one per (alert group, runbook), or a resolution.

What the intake ledger records and de-duplicates on: the group, the runbook and the sorted
fingerprints of the firing alerts. The incident is named here exactly as the runner names it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workbooks.archive.store import incident_id
from workbooks.core.alert import Alert, AlertGroup
from workbooks.running.routing import Runbook, route


def alert_fingerprint(alert: Alert) -> str:
    """Alertmanager's fingerprint, or one made from the labels when a payload lacks it."""
    if alert.fingerprint:
        return alert.fingerprint
    labels = json.dumps(sorted(alert.labels.items()))
    return hashlib.sha256(labels.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class PlannedRun:
    """One runbook's share of a delivery: a run to queue, or (nothing firing) a resolution."""

    runbook: str
    incident_id: str
    group_key: str
    firing: tuple[str, ...]  # sorted fingerprints of the firing alerts
    ended_at: datetime | None  # the latest endsAt, for a resolution
    payload: dict[str, Any]  # the delivery narrowed to this runbook's alerts

    @property
    def resolved(self) -> bool:
        return not self.firing

    @property
    def dedup_key(self) -> str:
        key = json.dumps([self.group_key, self.runbook, list(self.firing)])
        return hashlib.sha256(key.encode("utf-8")).hexdigest()


def plan(group: AlertGroup, runbooks: dict[str, Runbook]) -> list[PlannedRun]:
    """Split a delivery by runbook; raises :class:`UnknownRunbookError` for an unhandled alert.

    Each runbook gets the delivery narrowed to its own alerts, so the runner, given that payload
    and the runbook id, names the incident exactly as computed here.
    """
    payload = group.to_payload()
    planned = []
    for each in route(group, runbooks):
        chosen = {id(alert) for alert in each.alerts}
        pairs = zip(group.alerts, payload["alerts"], strict=True)
        alerts = [data for alert, data in pairs if id(alert) in chosen]
        firing = sorted(alert_fingerprint(a) for a in each.alerts if a.status == "firing")
        narrowed = {**payload, "alerts": alerts, "status": "firing" if firing else "resolved"}
        # As the runner names incidents: the group key, and the earliest alert of the group.
        earliest = min(each.alerts, key=lambda alert: (alert.starts_at, alert.name))
        ends = [alert.ends_at for alert in each.alerts if alert.ends_at is not None]
        planned.append(
            PlannedRun(
                runbook=each.runbook.id,
                incident_id=incident_id(group.group_key, earliest.starts_at, earliest.name),
                group_key=group.group_key,
                firing=tuple(firing),
                ended_at=max(ends) if ends else None,
                payload=narrowed,
            )
        )
    return planned
