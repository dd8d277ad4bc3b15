"""Record each end-to-end case's evidence, so its diagnosis can be replayed without Prometheus.

For every case: one real Prometheus holding all the cases, the workbook run on the case's alert
as ``workbook run`` does, and what it saved copied to ``<target>/<case-id>/``: ``alert.json`` and
``evidence/`` (Parquet plus ``manifest.json``). Replaying with ``source`` set to that evidence
folder gives the same findings. ``scripts/record-demo --cases`` runs this.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from workbooks.archive.store import EVIDENCE_DIR, Archive
from workbooks.core.config import load_config
from workbooks.synthetic.check import CaseResult, case_kernels, run_case
from workbooks.synthetic.lab import start_prometheus
from workbooks.synthetic.scenarios import Case, all_cases

ALERT_FILE = "alert.json"


def record_cases(target: Path, cases: Sequence[Case] | None = None) -> list[CaseResult]:
    """Record `cases` (default: every case of every runbook) into `target`/<case-id>/.

    Needs the prometheus and promtool binaries. Returns how each live run went, so a recording
    that no longer finds its cause is noticed.
    """
    cases = list(all_cases() if cases is None else cases)
    results = []
    scratch_folder = tempfile.TemporaryDirectory(prefix="workbooks-cases-")
    with scratch_folder as scratch, case_kernels(cases) as kernels:
        config = load_config().model_copy(update={"archive": str(Path(scratch) / "archive")})
        archive = Archive(config.archive_dir)
        server = start_prometheus([case.scenario for case in cases], Path(scratch) / "prometheus")
        try:
            for case in cases:
                result = run_case(
                    case, source=server.url, archive=archive, config=config, kernels=kernels
                )
                if result.run_path is None:
                    raise RuntimeError(f"case {case.id}: the run left no archive folder")
                _keep(case, Path(result.run_path) / EVIDENCE_DIR, Path(target) / case.id)
                results.append(result)
        finally:
            server.stop()
    return results


def _keep(case: Case, evidence: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / EVIDENCE_DIR, ignore_errors=True)
    shutil.copytree(evidence, folder / EVIDENCE_DIR)
    manifest_path = folder / EVIDENCE_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    # The manifest names the throwaway Prometheus it came from; say what it was instead.
    manifest["source"] = f"synthetic case {case.id!r} ({case.runbook}/{case.cause}) in Prometheus"
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    payload = case.scenario.alert_payload()
    (folder / ALERT_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
