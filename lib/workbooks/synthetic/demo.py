"""The bundled demo incidents: one per runbook, recorded from a real Prometheus.

Each demo is a synthetic scenario (``workbooks.synthetic.scenarios``) backfilled into Prometheus
with
``promtool``; its runbook notebook runs against that Prometheus with "now" pinned to the end of
the scenario, and the evidence it saved is what ``source="demo"`` replays offline. A test
records them again and compares (``tests/test_demo.py``); ``scripts/record-demo`` rewrites them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from workbooks.core.paths import DEMO_ALERT_FILE, demo_dir
from workbooks.synthetic.scenarios import Scenario, make_scenario, runbooks

DEMO_ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)


def demo_scenario(runbook: str) -> Scenario:
    """The scenario `runbook`'s demo shows: its module's DEMO case, on service inference-api."""
    demo = runbooks()[runbook].demo
    if demo is None:
        raise ValueError(f"runbook {runbook} has no DEMO case in its scenario module")
    return make_scenario(
        runbook,
        demo.cause,
        affected=demo.affected,
        magnitude=demo.magnitude,
        seed=demo.seed,
        onset=DEMO_ONSET,
    )


# runbook -> the scenario its demo shows (the culprit is never the largest absolute value)
DEMO_SCENARIOS: dict[str, Scenario] = {
    runbook: demo_scenario(runbook) for runbook, found in runbooks().items() if found.demo
}


def demo_alert_path(runbook: str) -> Path:
    return demo_dir(runbook) / DEMO_ALERT_FILE


def record_demo(runbook: str, notebook: Path, target: Path) -> Path:
    """Record ``runbook``'s demo into ``target`` (``alert.json`` and ``evidence/``).

    Needs the prometheus and promtool binaries; starts and stops its own Prometheus.
    """
    import papermill

    from workbooks.core.alert import parse_alert_group
    from workbooks.running.routing import read_runbook
    from workbooks.running.runner import workbook_parameters
    from workbooks.synthetic.lab import start_prometheus

    scenario = DEMO_SCENARIOS[runbook]
    payload = scenario.alert_payload()
    group = parse_alert_group(payload)
    with tempfile.TemporaryDirectory(prefix="workbooks-demo-") as scratch:
        server = start_prometheus([scenario], Path(scratch) / "prometheus")
        try:
            evidence = target / "evidence"
            shutil.rmtree(evidence, ignore_errors=True)
            parameters = workbook_parameters(
                read_runbook(notebook), group.alerts, group, source=server.url
            )
            environment = {
                "WORKBOOKS_NOW": scenario.end.isoformat(),
                "WORKBOOKS_EVIDENCE_DIR": str(evidence.resolve()),
            }
            saved = {name: os.environ.get(name) for name in environment}
            os.environ.update(environment)  # the kernel inherits the environment
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(Path(scratch) / "recorded.ipynb"),
                    parameters=parameters,
                    cwd=scratch,
                    progress_bar=False,
                )
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
        finally:
            server.stop()
    _rewrite_source(evidence, runbook)
    (target / "alert.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return target


def _rewrite_source(evidence: Path, runbook: str) -> None:
    """The manifest names the throwaway Prometheus it came from; say what it was instead."""
    manifest_path = evidence / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["source"] = f"synthetic scenario {DEMO_SCENARIOS[runbook].cause!r} in Prometheus"
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
