"""high-error-rate: the error-budget burn rate of the availability SLO, multiwindow.

The burn rate is the error share over a window divided by the budget (1 - objective): at 1x the
budget lasts exactly the SLO period (30 days). The pairs follow the Google SRE workbook's
multiwindow alerting: a *fast burn* when both the 5-minute and the 1-hour rates are above 14.4x
(2% of a 30-day budget in one hour), a *slow burn* when both the 30-minute and 6-hour rates are
above 6x (5% in six hours). The short window of each pair says it is still burning now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

BUDGET_DAYS = 30
FAST_PAIR, SLOW_PAIR = ("5m", "1h"), ("30m", "6h")


@dataclass(frozen=True)
class Burn:
    """Burn rates at the end of the window, per window ("5m", "1h", "30m", "6h")."""

    objective: float
    rates: dict[str, float]
    fast: float
    slow: float

    def pair(self, windows: tuple[str, str]) -> float:
        """The smaller rate of a pair: both windows must be above a threshold to count."""
        values = [self.rates.get(window, math.nan) for window in windows]
        return math.nan if any(math.isnan(v) for v in values) else min(values)

    @property
    def severity(self) -> Severity:
        if self.pair(FAST_PAIR) >= self.fast:
            return "critical"
        if self.pair(SLOW_PAIR) >= self.slow:
            return "warning"
        return "info"

    @property
    def hours_left(self) -> float | None:
        """How long a whole budget lasts at the 1-hour rate (None when not burning)."""
        rate = self.rates.get("1h", math.nan)
        return BUDGET_DAYS * 24 / rate if rate > 1 else None


def objective(incident: Incident) -> float:
    """The service's availability objective from the config (``slo:``), default 99.5%."""
    return incident.config.slo.availability_for(incident.service)


def burn_of(results: dict[str, QueryResult], *, objective: float, fast: float, slow: float) -> Burn:
    """Burn rates from error-share results per window (their last value). Pure."""
    budget = 1.0 - objective
    rates = {}
    for window, result in results.items():
        values = result.current["value"].astype(float).dropna() if not result.empty else []
        rates[window] = float(values.iloc[-1]) / budget if len(values) else math.nan
    return Burn(objective, rates, fast, slow)


def burn_rate(
    incident: Incident, results: dict[str, QueryResult], *, fast: float, slow: float
) -> Burn:
    """Chart the burn rates over the window and record how fast the budget burns now."""
    slo = objective(incident)
    burn = burn_of(results, objective=slo, fast=fast, slow=slow)
    frames = [
        r.current.assign(window=window, value=r.current["value"].astype(float) / (1 - slo))
        for window, r in results.items()
        if not r.empty
    ]
    if frames:
        incident.show(
            charts.timeseries(
                pd.concat(frames, ignore_index=True),
                by="window",
                title=incident.chart_title(f"Error-budget burn rate (SLO {100 * slo:g}%)"),
                alert_start=pd.Timestamp(incident.starts_at),
                limit=fast,
                limit_label=f"fast burn {fast:g}x",
            )
        )
    incident.record(_finding(incident, burn))
    steps.checked(incident, f"burn rate: {_rates_text(burn)} against SLO {100 * slo:g}%")
    return burn


def _rates_text(burn: Burn) -> str:
    return ", ".join(f"{steps.ratio_text(rate)} ({window})" for window, rate in burn.rates.items())


def _finding(incident: Incident, burn: Burn) -> Finding:
    severity = burn.severity
    slo = f"the {100 * burn.objective:g}% SLO"
    rates = _rates_text(burn)
    left = ""
    if burn.hours_left:
        left = f"; at the 1-hour rate a {BUDGET_DAYS}-day budget lasts {burn.hours_left:.0f} h"
    if severity == "critical":
        title = f"Fast burn of {slo}: {rates}, 5m and 1h both above {burn.fast:g}x{left}"
    elif severity == "warning":
        title = f"Slow burn of {slo}: {rates}, 30m and 6h both above {burn.slow:g}x{left}"
    else:
        title = (
            f"The error budget of {slo} burns below the paging and ticket thresholds: {rates} "
            f"(fast burn: 5m and 1h above {burn.fast:g}x; slow: 30m and 6h above {burn.slow:g}x)"
            f"{left}"
        )
    return Finding(
        severity=severity,
        title=title,
        subject={"service": incident.service},
        metric="high_error_rate_over_1h",
        observed=burn.rates.get("1h"),
        baseline=1.0,
        unit=None,
    )
