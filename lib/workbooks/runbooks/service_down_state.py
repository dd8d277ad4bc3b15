"""service-down, the shared part: thresholds, whose targets to read, and when each went down.

Pure functions on the frames the catalog queries return (``up`` per instance, ``probe_success``
per probed URL): the steps in :mod:`workbooks.runbooks.service_down` and
:mod:`workbooks.runbooks.service_down_causes` read an :class:`Outage` built here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import Severity
from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident
from workbooks.runbooks import steps

THRESHOLDS = steps.Thresholds(
    "service-down",
    # Share of the service's targets down (or flapping) now: critical from half the fleet.
    down_share_critical=0.5,
    down_share_warning=0.01,
    # Over the last `recent_minutes`, a target down at least this share of the samples is
    # "down now" even if its last scrape succeeded (a crash loop flaps).
    flapping_share=0.2,
    recent_minutes=10,
    # Two down stretches this close (minutes) are one outage; a longer healthy stretch ends it.
    healthy_gap_minutes=10,
    # Container restarts in the window that make a crash loop.
    crash_restarts=3,
    # Targets that went down within this many seconds of each other went down together.
    together_seconds=120,
    # A dependency down at most this many minutes before the service's first target is "first".
    dependency_lead_minutes=30,
)
# A version loaded this close to the outage's onset is a suspect.
ROLLOUT_BEFORE = timedelta(minutes=15)
ROLLOUT_AFTER = timedelta(minutes=5)
# Scrapes are not aligned: a dependency "down first" may show up to one step after the service.
SCRAPE_SLACK = timedelta(minutes=1)
# Labels that say which service an alert is about, in order of preference: host and
# kube-state-metrics alerts carry no `service`, but their job or container names it.
SERVICE_LABELS = ("service", "job", "container")


def scope(incident: Incident) -> dict[str, str]:
    """The placeholders every service-down query takes: ``{"service": ...}`` from the alert.

    ServiceDown carries ``service``; TargetDown/InstanceDown the ``job``; KubePodCrashLooping the
    ``container`` (the service's name in its pod spec).
    """
    for label in SERVICE_LABELS:
        if incident.labels.get(label):
            return {"service": incident.labels[label]}
    return {"service": ""}


@dataclass(frozen=True)
class Target:
    """One scrape target (or probed URL) over the window: when it went down, is it down now."""

    name: str
    down_now: bool
    went_down: pd.Timestamp | None  # the start of the outage it is in (or was last in)
    down_samples: int  # in the window
    samples: int
    down_transitions: int  # up -> down, in the window: 2 or more is flapping
    recent_down_share: float

    @property
    def missed(self) -> bool:
        """Down at some point in the window, but fine now (a missed scrape, a blip)."""
        return self.down_samples > 0 and not self.down_now


@dataclass(frozen=True)
class Outage:
    """What is down: the service's targets and its external probes, and since when."""

    service: str
    targets: tuple[Target, ...] = ()
    probes: tuple[Target, ...] = ()
    severity: Severity = "info"
    # instance -> share of its scrapes that failed from the onset on
    since_onset: Mapping[str, float] = field(default_factory=dict)

    @property
    def down(self) -> list[Target]:
        return [t for t in self.targets if t.down_now]

    @property
    def failing_probes(self) -> list[Target]:
        return [p for p in self.probes if p.down_now]

    @property
    def ongoing(self) -> bool:
        return bool(self.down or self.failing_probes)

    @property
    def share_down(self) -> float:
        return len(self.down) / len(self.targets) if self.targets else 0.0

    @property
    def onset(self) -> pd.Timestamp | None:
        """When the outage began: the first target (or, with every target up, probe) to fail."""
        moments = [t.went_down for t in self.down if t.went_down is not None]
        if not moments:
            moments = [p.went_down for p in self.failing_probes if p.went_down is not None]
        return min(moments) if moments else None


def targets_of(frame: pd.DataFrame, *, by: str, limits: Mapping[str, float]) -> list[Target]:
    """One :class:`Target` per value of ``by`` in a 0/1 frame (``up`` or ``probe_success``)."""
    if frame.empty:
        return []
    wide = analysis.to_wide(frame, by, agg="min").sort_index()
    return [target_of(str(name), wide[name].dropna(), limits) for name in wide.columns]


def target_of(name: str, values: pd.Series, limits: Mapping[str, float]) -> Target:
    """Judge one 0/1 series: down now, since when, how often it flapped. Pure."""
    down = values < 0.5
    recent_from = values.index.max() - pd.Timedelta(minutes=limits["recent_minutes"])
    recent = down[down.index > recent_from]
    recent_share = float(recent.mean()) if len(recent) else 0.0
    last_down = bool(down.iloc[-1]) if len(down) else False
    down_now = last_down or recent_share >= limits["flapping_share"]
    transitions = int((down & ~down.shift(1, fill_value=False)).sum())
    return Target(
        name=name,
        down_now=down_now,
        went_down=_outage_start(down, pd.Timedelta(minutes=limits["healthy_gap_minutes"])),
        down_samples=int(down.sum()),
        samples=len(values),
        down_transitions=transitions,
        recent_down_share=recent_share,
    )


def _outage_start(down: pd.Series, healthy_gap: pd.Timedelta) -> pd.Timestamp | None:
    """The first down sample of the last chain of down samples no more than ``healthy_gap``
    apart: a crash loop's flaps are one outage, a blip an hour earlier is not part of it."""
    moments = list(down.index[down.to_numpy()])
    if not moments:
        return None
    start = moments[-1]
    for moment in reversed(moments[:-1]):
        if start - moment > healthy_gap:
            break
        start = moment
    return pd.Timestamp(start)


def down_shares(frame: pd.DataFrame, since: pd.Timestamp | None) -> dict[str, float]:
    """instance -> share of its samples down (< 0.5) from ``since`` on; {} without an onset."""
    if frame.empty or since is None:
        return {}
    wide = analysis.to_wide(frame, "instance", agg="min").sort_index()
    after = wide[wide.index >= since]
    return {str(name): float((after[name].dropna() < 0.5).mean()) for name in after.columns}


def together(targets: list[Target], seconds: float) -> bool:
    """Whether these targets all went down within ``seconds`` of each other."""
    moments = [t.went_down for t in targets if t.went_down is not None]
    if len(moments) < len(targets) or not moments:
        return False
    return (max(moments) - min(moments)).total_seconds() <= seconds


def host_of(instance: str) -> str:
    """``10.0.0.5:8080`` -> ``10.0.0.5``; a pod's scrape target is named after the pod's host."""
    return instance.rsplit(":", 1)[0] if re.search(r":\d+$", instance) else instance


def minute(moment: pd.Timestamp | None) -> str:
    return f"{moment:%H:%M} UTC" if moment is not None else "before the window"
