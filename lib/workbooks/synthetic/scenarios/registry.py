"""The runbook scenario modules of this package, found by looking (pkgutil), never listed.

A module is a runbook's when it defines ``RUNBOOK``; adding a runbook is adding one module.
The modules are imported on first use, since they import the shared modules that use this one.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from workbooks.core.errors import UnknownRunbookError

if TYPE_CHECKING:
    from workbooks.synthetic.scenarios.openmetrics import Family
    from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause


@dataclass(frozen=True)
class RunbookScenarios:
    """What one runbook's scenario module declares."""

    runbook: str  # the runbook id, e.g. "high-latency"
    module: str  # the module's name, e.g. "high_latency"
    alert: AlertRule
    families: tuple[Family, ...]
    causes: dict[str, Cause]
    demo: Case | None  # the bundled demo incident (runbook filled in); None until it exists
    cases: tuple[Case, ...]  # the end-to-end cases (runbook filled in)
    labels: dict[str, tuple[str, ...]]  # allowed values of its own `affected` keys
    # Scenario defaults of this runbook (SCENARIO, optional), e.g. a weekly baseline
    scenario: dict[str, Any] = field(default_factory=dict)


@functools.cache
def runbooks() -> dict[str, RunbookScenarios]:
    """Runbook id -> its scenarios, sorted by id (the dict `register` adds to)."""
    package = importlib.import_module("workbooks.synthetic.scenarios")
    found: dict[str, RunbookScenarios] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if getattr(module, "RUNBOOK", None) is not None:
            scenarios = _declared(module)
            found[scenarios.runbook] = scenarios
    return dict(sorted(found.items()))


def register(module: ModuleType) -> RunbookScenarios:
    """Add a runbook scenario module that lives outside this package (a draft, a test's)."""
    scenarios = _declared(module)
    runbooks()[scenarios.runbook] = scenarios
    return scenarios


def _declared(module: ModuleType) -> RunbookScenarios:
    runbook_id = module.RUNBOOK
    return RunbookScenarios(
        runbook=runbook_id,
        module=module.__name__.rpartition(".")[2],
        alert=module.ALERT,
        families=tuple(module.FAMILIES),
        causes={cause.name: cause for cause in module.CAUSES},
        demo=replace(module.DEMO, runbook=runbook_id) if module.DEMO else None,
        cases=tuple(replace(case, runbook=runbook_id) for case in module.CASES),
        labels=dict(getattr(module, "LABELS", {})),
        scenario=dict(getattr(module, "SCENARIO", {})),
    )


def runbook(runbook_id: str) -> RunbookScenarios:
    """The scenarios of `runbook_id`; UnknownRunbookError lists the known ones."""
    known = runbooks()
    if runbook_id not in known:
        raise UnknownRunbookError(
            f"no synthetic scenarios for runbook {runbook_id!r}; known: {', '.join(known)} "
            "(add a module to workbooks/synthetic/scenarios/)"
        )
    return known[runbook_id]


def cause(runbook_id: str, name: str) -> Cause:
    causes = runbook(runbook_id).causes
    if name not in causes:
        raise UnknownRunbookError(
            f"no scenario {runbook_id}/{name}; known causes: {', '.join(causes)}"
        )
    return causes[name]


def all_cases() -> list[Case]:
    """Every end-to-end case of every runbook."""
    return [case for scenarios in runbooks().values() for case in scenarios.cases]
