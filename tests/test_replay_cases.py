"""Every end-to-end case, replayed from its recorded evidence with no Prometheus at all.

tests/data/cases/<case-id>/ holds what the workbook read from a real Prometheus loaded with the
case (``scripts/record-demo --cases`` records it), so each runbook's diagnosis is checked even
where Prometheus is not installed. One case is recorded again and compared, so a recording
cannot go stale silently (re-record after a runbook's queries change).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CASES, CASES_DIR, assert_same_evidence
from workbooks.archive.store import Archive
from workbooks.core.config import load_config
from workbooks.running.warm import KernelPool
from workbooks.synthetic.check import case_kernels, run_case
from workbooks.synthetic.lab import prometheus_available
from workbooks.synthetic.recording import record_cases
from workbooks.synthetic.scenarios import Case


def test_every_case_is_recorded_with_its_alert_and_a_small_evidence_folder() -> None:
    recorded = sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir())
    assert recorded == sorted(case.id for case in CASES), "run scripts/record-demo --cases"
    for case in CASES:
        folder = CASES_DIR / case.id
        payload = json.loads((folder / "alert.json").read_text())
        assert payload == json.loads(json.dumps(case.scenario.alert_payload()))
        manifest = json.loads((folder / "evidence" / "manifest.json").read_text())
        assert manifest["entries"] and case.id in manifest["source"]
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        # The whole artifact of a 2-hour run, evidence included, stays under 1 MB; a case's
        # evidence (the mobile runbooks' version x backend x device breakdowns are the largest,
        # about 450 KB) under half of that.
        assert size < 512_000, f"{case.id} evidence is {size} bytes"


@pytest.fixture(scope="module")
def kernels() -> Iterator[KernelPool]:
    """Kernels as `workbook test` gives them: each case its own, started while the last ran."""
    with case_kernels(CASES) as pool:
        yield pool


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_replayed_case_names_the_planted_cause(
    case: Case, tmp_path: Path, kernels: KernelPool
) -> None:
    config = load_config().model_copy(update={"archive": str(tmp_path / "archive")})
    evidence = CASES_DIR / case.id / "evidence"
    archive = Archive(config.archive_dir)
    result = run_case(case, source=str(evidence), archive=archive, config=config, kernels=kernels)
    assert result.status == "succeeded", result.reason
    record = json.loads((Path(result.run_path) / "run.json").read_text())
    assert record["source"] == str(evidence)  # read from the recording, not a Prometheus
    assert result.passed, f"{case.id}: {result.reason}"


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.skipif(not prometheus_available(), reason="needs prometheus and promtool")
def test_recording_a_case_again_gives_the_recorded_evidence(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "mem-step")
    record_cases(tmp_path, [case])
    recorded = CASES_DIR / case.id / "evidence"
    fresh = tmp_path / case.id / "evidence"
    assert (tmp_path / case.id / "alert.json").read_text() == (
        CASES_DIR / case.id / "alert.json"
    ).read_text()
    assert (
        json.loads((fresh / "manifest.json").read_text())["source"]
        == json.loads((recorded / "manifest.json").read_text())["source"]
    )
    assert_same_evidence(fresh, recorded)
