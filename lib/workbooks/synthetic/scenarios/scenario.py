"""One synthetic incident (`Scenario`), and the pieces a runbook's scenario module is made of.

A runbook's module (``high_latency.py`` and its siblings) gives its `AlertRule`, the `Family`s
its workbook reads, its `Cause`s and its `Case`s; `make_scenario` turns a runbook, a cause and a
seed into a `Scenario`, whose `openmetrics()` is its history and `alert_payload()` the
Alertmanager webhook that would have fired.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workbooks.synthetic.scenarios import registry
from workbooks.synthetic.scenarios.fleet import INSTANCES, OLD_VERSION, ROUTES, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, render, render_spans

# Data before the lookback so that rate()[5m] and avg_over_time()[15m] are full at its start.
MARGIN = timedelta(minutes=20)
ALERT_FOR = timedelta(minutes=5)
# Every recorded case starts here: fixed, so a recording is reproducible (14:05 UTC, near the
# daily traffic peak, as the demos).
CASE_ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """The rule an on-call team would have written; `$S` is the service selector.

    It only decorates the payload's generatorURL: rules never evaluate over backfilled history.
    """

    alertname: str
    severity: str
    expr: str
    summary: str  # {service} is filled in
    description: str
    # Labels the alert carries besides alertname, service and severity, {service} and the
    # case's `affected` keys filled in: the exporter's `instance` of a database or host alert
    # (its series have no service), the `mountpoint` of a filesystem alert.
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Cause:
    """A planted cause: what it touches by default, its size, and its effect on the fleet.

    `affected` lists the keys a scenario of this cause must give (with default values);
    `magnitude` is in the cause's own unit (a latency multiplier, GiB per hour, accuracy lost).
    `plant(fleet)` changes the fleet, reading `fleet.scenario.affected` and `.magnitude`.
    """

    name: str
    summary: str
    affected: dict[str, str]
    magnitude: float
    plant: Callable[[Fleet], None]


@dataclass(frozen=True, kw_only=True)
class Case:
    """A scenario to run the workbook on, and what its top finding must name.

    `expect` is {} for a quiet control (no critical finding, the top one "A quiet run..."); a
    value may be a tuple when the finding must name several (two instances). `not_named` are
    labels no likely-cause finding may name (a change that is not the cause).
    """

    id: str
    cause: str
    seed: int
    expect: dict[str, str | tuple[str, ...]]
    affected: dict[str, str] = field(default_factory=dict)
    magnitude: float | None = None
    not_named: dict[str, str] = field(default_factory=dict)
    runbook: str = ""  # filled in from the module's RUNBOOK when the modules are read

    @property
    def scenario(self) -> Scenario:
        """This case's scenario, under its own service so that cases share a Prometheus."""
        return make_scenario(
            self.runbook,
            self.cause,
            affected=self.affected,
            magnitude=self.magnitude,
            seed=self.seed,
            onset=CASE_ONSET,
            service=f"svc-{self.id}",
        )


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One synthetic incident; `make_scenario` fills the defaults."""

    runbook: str
    cause: str
    affected: dict[str, str]
    magnitude: float
    seed: int
    onset: datetime
    service: str = "inference-api"
    lookback: timedelta = timedelta(hours=2)
    baseline: timedelta = timedelta(days=1)
    # Also the same stretch on each whole day between the baseline and now: a weekly baseline
    # ("7d") is judged against the days between too (anomalous-traffic).
    days_between: bool = False
    after_onset: timedelta = timedelta(minutes=40)
    step: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        cause = registry.cause(self.runbook, self.cause)
        if self.onset.utcoffset() is None:
            raise ValueError("onset must be timezone-aware (UTC)")
        if self.step <= timedelta(0):
            raise ValueError("step must be positive")
        if self.baseline <= self.end - self._start:
            # The two stretches would overlap and promtool would drop the repeated samples.
            raise ValueError("baseline must be longer than lookback + 20min + after_onset")
        if self.days_between and self.baseline % timedelta(days=1):
            raise ValueError("days_between needs a baseline of whole days, such as 7 days")
        if set(self.affected) != set(cause.affected):
            raise ValueError(f"{self.cause} needs affected keys {sorted(cause.affected)}")
        _check_affected(self.runbook, self.affected)

    @property
    def alert_starts_at(self) -> datetime:
        """When the alert fired: onset plus the rule's `for:`."""
        return self.onset + ALERT_FOR

    @property
    def end(self) -> datetime:
        """The last sample's time."""
        return self.onset + self.after_onset

    @property
    def _start(self) -> datetime:
        return self.onset - self.lookback - MARGIN

    @property
    def offsets(self) -> tuple[timedelta, ...]:
        """How far back each stretch is: the baseline first, then the days between, then 0."""
        between = range(self.baseline.days - 1, 0, -1) if self.days_between else range(0)
        return (self.baseline, *(timedelta(days=days) for days in between), timedelta(0))

    @property
    def history_windows(self) -> tuple[tuple[datetime, datetime], ...]:
        """The stretches that hold samples, oldest (the baseline) first, current last; ends
        inclusive. Two unless `days_between`."""
        return tuple((self._start - offset, self.end - offset) for offset in self.offsets)

    def fleet(self) -> Fleet:
        """The fleet with this scenario's cause planted."""
        fleet = Fleet(self)
        registry.cause(self.runbook, self.cause).plant(fleet)
        return fleet

    def alert_payload(self) -> dict[str, Any]:
        """The Alertmanager webhook (version 4) for this incident, firing, culprit not named."""
        rule = registry.runbook(self.runbook).alert
        labels = {"alertname": rule.alertname, "service": self.service, "severity": rule.severity}
        labels |= {
            name: value.format(service=self.service, **self.affected)
            for name, value in rule.labels.items()
        }
        annotations = {
            "summary": rule.summary.format(service=self.service),
            "description": rule.description.format(service=self.service),
        }
        expr = rule.expr.replace("$S", f'{{service="{escape(self.service)}"}}')
        group_labels = {"alertname": rule.alertname, "service": self.service}
        group_key = ", ".join(f'{name}="{value}"' for name, value in group_labels.items())
        alert = {
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": _rfc3339(self.alert_starts_at),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"http://prometheus.example/graph?g0.expr={quote(expr)}&g0.tab=1",
            "fingerprint": _fingerprint(labels),
        }
        return {
            "receiver": "workbooks",
            "status": "firing",
            "alerts": [alert],
            "groupLabels": group_labels,
            "commonLabels": dict(labels),
            "commonAnnotations": dict(annotations),
            "externalURL": "http://alertmanager.example:9093",
            "version": "4",
            "groupKey": f"{{}}:{{{group_key}}}",
            "truncatedAlerts": 0,
        }

    def openmetrics(self) -> str:
        """The whole history as OpenMetrics text, ending with ``# EOF``."""
        return render(_families([self]))


def make_scenario(
    runbook: str,
    cause: str,
    *,
    affected: dict[str, str] | None = None,
    magnitude: float | None = None,
    seed: int = 0,
    onset: datetime | None = None,
    service: str = "inference-api",
    **kw: Any,
) -> Scenario:
    """A scenario with this runbook's defaults for `cause`; `affected` overrides key by key.

    `onset` defaults to 30 minutes ago, rounded down to the minute, so the history ends
    10 minutes in the future with the default `after_onset`.
    """
    planted = registry.cause(runbook, cause)
    kw = {**registry.runbook(runbook).scenario, **kw}  # the module's SCENARIO defaults
    if onset is None:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        onset = now - timedelta(minutes=30)
    return Scenario(
        runbook=runbook,
        cause=cause,
        affected={**planted.affected, **(affected or {})},
        magnitude=planted.magnitude if magnitude is None else magnitude,
        seed=seed,
        onset=onset,
        service=service,
        **kw,
    )


def write_openmetrics(scenarios: Sequence[Scenario], path: Path) -> Path:
    """Write several scenarios (distinct `service` values) into one OpenMetrics file."""
    _check_services(scenarios)
    path = Path(path)
    path.write_text(render(_families(scenarios)), encoding="utf-8")
    return path


# Prometheus's TSDB block: promtool writes one per 2 hours of history.
BLOCK_SECONDS = 2 * 3600


def write_history(scenarios: Sequence[Scenario], folder: Path) -> list[Path]:
    """:func:`write_openmetrics`, one file per TSDB block of history: what promtool is given.

    promtool (2.42) reads its whole input once for every block it writes, and a set of cases
    spans a week of blocks: the end-to-end cases, 610 MB of text, took 121 s as one file and
    24 s as one file per block (prometheus/prometheus#8915, "backfill very slow when operating
    across long durations").
    """
    _check_services(scenarios)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for span, text in render_spans(_families(scenarios), span_seconds=BLOCK_SECONDS).items():
        paths.append(folder / f"history-{span * BLOCK_SECONDS}.om")
        paths[-1].write_text(text, encoding="utf-8")
    return paths


def _check_services(scenarios: Sequence[Scenario]) -> None:
    services = [scenario.service for scenario in scenarios]
    if len(set(services)) != len(services):
        # Same series twice: promtool would silently keep only the first of each timestamp.
        raise ValueError(f"scenarios in one file need distinct services, got {services}")


def _families(scenarios: Sequence[Scenario]) -> list[tuple[Family, list[Group]]]:
    blocks = []
    for scenario in scenarios:
        fleet = scenario.fleet()
        blocks += [(f, f.series(fleet)) for f in registry.runbook(scenario.runbook).families]
    return blocks


def _check_affected(runbook: str, affected: dict[str, str]) -> None:
    # The label values this runbook's families write: two runbooks may both use a label (the
    # clients of unauthorized-access and of anomalous-traffic) with values of their own.
    allowed = {"route": set(ROUTES), "instance": set(INSTANCES)}
    allowed.update({key: set(values) for key, values in registry.runbook(runbook).labels.items()})
    if affected.get("model_version") == OLD_VERSION:
        raise ValueError(f"the rolled-out model_version must differ from {OLD_VERSION}")
    for key, value in affected.items():
        values = value.split(",")
        if key in allowed and not set(values) <= allowed[key]:
            raise ValueError(f"affected {key}={value!r}; known: {', '.join(sorted(allowed[key]))}")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fingerprint(labels: dict[str, str]) -> str:
    # FNV-1a 64 over sorted names and values: what Alertmanager (0.25, checked) would send.
    digest = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"
