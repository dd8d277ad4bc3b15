"""The severity ladder: each runbook declares its thresholds, a team may override them.

A runbook module declares its thresholds once, with defaults::

    THRESHOLDS = Thresholds(
        "high-latency", latency_ratio_critical=2.0, latency_ratio_warning=1.3, moved_ratio=1.5
    )

and reads them for the incident at hand with ``THRESHOLDS.of(incident)``, which applies the
team's config (``runbooks: {high-latency: {thresholds: {latency_ratio_critical: 3}}}``). A name
the runbook does not declare is an error naming the known ones: a typo must not silently leave
the default in place.

A pair ``<name>_critical`` / ``<name>_warning`` is a ladder: :meth:`Limits.severity` maps a
value onto critical, warning or info with it, for values that are bad going up (a latency
ratio) or going down (free disk space).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from workbooks.core.config import Config
from workbooks.core.errors import ConfigError
from workbooks.core.findings import Severity

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident

Direction = Literal["up", "down"]


def severity_for(
    value: float | None, *, critical: float, warning: float, direction: Direction = "up"
) -> Severity:
    """``critical`` past the critical threshold, ``warning`` past the warning one, else info.

    ``direction="up"``: bad when ``value >= threshold``; ``"down"``: bad when ``value <=
    threshold`` (so for "down" the critical threshold is the lower one). A missing or non-finite
    value is info: no number, no alarm.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
    if value is None or not math.isfinite(value):
        return "info"
    sign = 1.0 if direction == "up" else -1.0
    if sign * value >= sign * critical:
        return "critical"
    if sign * value >= sign * warning:
        return "warning"
    return "info"


@dataclass(frozen=True)
class Limits(Mapping[str, float]):
    """A runbook's thresholds for one incident: its defaults with the team's overrides on top."""

    runbook: str
    values: Mapping[str, float]
    overridden: frozenset[str] = field(default_factory=frozenset)

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            known = ", ".join(sorted(self.values))
            raise KeyError(f"{self.runbook} has no threshold {name!r}; known: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def severity(
        self, value: float | None, ladder: str, *, direction: Direction = "up"
    ) -> Severity:
        """Map ``value`` with the pair ``<ladder>_critical`` / ``<ladder>_warning``."""
        return severity_for(
            value,
            critical=self[f"{ladder}_critical"],
            warning=self[f"{ladder}_warning"],
            direction=direction,
        )

    def ladder(
        self, name: str, *, direction: Direction = "up"
    ) -> Callable[[float | None], Severity]:
        """:meth:`severity` with the ladder fixed, for a step's ``severity=`` argument."""
        self[f"{name}_critical"], self[f"{name}_warning"]  # unknown names fail here, not later
        return lambda value: self.severity(value, name, direction=direction)


class Thresholds:
    """The thresholds a runbook declares (name -> default); :meth:`of` applies a team's config."""

    def __init__(self, runbook: str, /, **defaults: float) -> None:
        if not defaults:
            raise ValueError("declare at least one threshold")
        self.runbook = runbook
        self.defaults: dict[str, float] = {name: float(v) for name, v in defaults.items()}
        for name in self.defaults:
            if name.endswith("_critical") and name[: -len("critical")] + "warning" not in defaults:
                raise ValueError(f"{name} needs its pair {name[: -len('critical')]}warning")

    def __repr__(self) -> str:
        return f"Thresholds({self.runbook!r}, {self.defaults})"

    def resolve(self, config: Config) -> Limits:
        """The defaults with ``config.runbooks[<runbook>].thresholds`` on top, checked."""
        settings = config.runbooks.get(self.runbook)
        overrides = dict(settings.thresholds) if settings is not None else {}
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults))
            raise ConfigError(
                f"runbooks.{self.runbook}.thresholds in the config names "
                f"{', '.join(unknown)}, which {self.runbook} does not have; known: {known}. "
                "Fix the name in the config file."
            )
        values = {**self.defaults, **{name: float(v) for name, v in overrides.items()}}
        for name, value in values.items():
            if name.endswith("_critical"):
                self._check_order(name, value, values[name[: -len("critical")] + "warning"])
        return Limits(self.runbook, values, frozenset(overrides))

    def of(self, incident: Incident) -> Limits:
        """The thresholds for this incident's runbook, with its config's overrides."""
        return self.resolve(incident.config)

    def _check_order(self, name: str, critical: float, warning: float) -> None:
        # Whether a ladder points up or down is read from its defaults; an override that turns
        # it round (critical below warning on an "up" ladder) would never say critical.
        pair = name[: -len("critical")] + "warning"
        up = self.defaults[name] >= self.defaults[pair]
        if (up and critical < warning) or (not up and critical > warning):
            way = "at least" if up else "at most"
            raise ConfigError(
                f"runbooks.{self.runbook}.thresholds: {name} ({critical:g}) must be {way} "
                f"{pair} ({warning:g}); fix one of them in the config file."
            )
