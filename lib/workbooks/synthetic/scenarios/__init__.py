"""Synthetic incident history: Prometheus metrics with one planted cause, for tests and demos.

One module per runbook (``high_latency.py``, ...) declares that runbook's alert, the metric
families its workbook reads, its causes (each an effect on the shared fleet), its demo and its
end-to-end cases; `registry` finds those modules, so adding a runbook is adding one module.
The shared modules: `fleet` (service, instances, routes, versions, and what a cause changes),
`grid` (the sample grid and counters), `families` (the fleet's own metrics), `openmetrics`
(rendering), `scenario` (`Scenario`, `make_scenario` and the declaration types).

    scenario = make_scenario("high-latency", "slow_route", seed=3)
    scenario.openmetrics()      # history for promtool tsdb create-blocks-from openmetrics
    scenario.alert_payload()    # the Alertmanager webhook that would have fired
"""

from __future__ import annotations

from workbooks.synthetic.scenarios.fleet import (
    GIB,
    INSTANCES,
    MODEL,
    NEW_VERSION,
    OLD_VERSION,
    ROUTES,
    Fleet,
)
from workbooks.synthetic.scenarios.registry import RunbookScenarios, all_cases, runbook, runbooks
from workbooks.synthetic.scenarios.scenario import (
    CASE_ONSET,
    AlertRule,
    Case,
    Cause,
    Scenario,
    make_scenario,
    write_history,
    write_openmetrics,
)

__all__ = [
    "CASE_ONSET",
    "GIB",
    "INSTANCES",
    "MODEL",
    "NEW_VERSION",
    "OLD_VERSION",
    "ROUTES",
    "AlertRule",
    "Case",
    "Cause",
    "Fleet",
    "RunbookScenarios",
    "Scenario",
    "all_cases",
    "causes",
    "make_scenario",
    "runbook",
    "runbooks",
    "write_history",
    "write_openmetrics",
]


def causes() -> dict[str, tuple[str, ...]]:
    """Runbook id -> the names of its causes."""
    return {rb: tuple(scenarios.causes) for rb, scenarios in runbooks().items()}
