"""The bundled demo incidents: they replay offline, and a fresh recording matches them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from workbooks.synthetic.demo import DEMO_SCENARIOS, demo_dir, record_demo
from workbooks.synthetic.lab import prometheus_available

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("runbook", sorted(DEMO_SCENARIOS))
def test_demo_is_bundled_with_its_alert_and_evidence(runbook: str) -> None:
    folder = demo_dir(runbook)
    payload = json.loads((folder / "alert.json").read_text())
    assert payload == json.loads(json.dumps(DEMO_SCENARIOS[runbook].alert_payload()))
    manifest = json.loads((folder / "evidence" / "manifest.json").read_text())
    assert manifest["entries"], "the demo holds evidence"
    for entry in manifest["entries"]:
        assert (folder / "evidence" / entry["file"]).is_file()


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.skipif(not prometheus_available(), reason="needs prometheus and promtool")
@pytest.mark.parametrize("runbook", sorted(DEMO_SCENARIOS))
def test_recording_the_demo_again_gives_the_bundled_evidence(runbook: str, tmp_path) -> None:
    fresh = record_demo(runbook, ROOT / "notebooks" / f"{runbook}.ipynb", tmp_path)
    bundled = demo_dir(runbook) / "evidence"
    old = json.loads((bundled / "manifest.json").read_text())
    new = json.loads((fresh / "evidence" / "manifest.json").read_text())
    assert new["window"] == old["window"]
    assert sorted((e["name"], e["role"], e["query"]) for e in new["entries"]) == sorted(
        (e["name"], e["role"], e["query"]) for e in old["entries"]
    )
    for entry in old["entries"]:
        expected = pd.read_parquet(bundled / entry["file"])
        actual = pd.read_parquet(fresh / "evidence" / entry["file"])
        pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9)
