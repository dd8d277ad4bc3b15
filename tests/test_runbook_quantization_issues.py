"""quantization-issues on small hand-built frames: what an on-call engineer reads first.

Each incident is the bundled demo's (offline, its recorded window); the query results are built
here, so each test plants one situation and checks the finding a reader sees first: which
precision, eval set, modality, version or fault it names, and what it does not blame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from workbooks.core.config import Config, RunbookSettings
from workbooks.core.errors import ConfigError
from workbooks.core.findings import Finding, ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import quantization_issues as qi
from workbooks.runbooks.quantization_issues_data import serving

START = pd.Timestamp("2026-11-20 12:10", tz="UTC")  # the demo evidence's recorded window
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
INSTANCES = ("api-0", "api-1", "api-2", "api-3")
EVAL_SETS = {"general": "text", "ocr": "image", "audio-a": "audio", "audio-b": "audio"}
# Normal gap to fp32 (negative: worse); int4 on ocr is the widest and stays so.
NORMAL = {
    ("int8", "general"): -0.012,
    ("int8", "ocr"): -0.02,
    ("int8", "audio-a"): -0.012,
    ("int8", "audio-b"): -0.012,
    ("int4", "general"): -0.035,
    ("int4", "ocr"): -0.12,
    ("int4", "audio-a"): -0.035,
    ("int4", "audio-b"): -0.035,
}
Slice = tuple[str, str]


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(config: Config | None = None) -> Incident:
    return Incident(
        runbook="quantization-issues",
        alert_name="QuantizedAccuracyDrop",
        labels={"service": "svc"},
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=config or Config(),
    )


def result(name: str, current: pd.DataFrame, baseline: pd.DataFrame, unit: str) -> QueryResult:
    return QueryResult(name, name, "hand-built", unit, incident().window, 60, current, baseline)


def gap_frame(
    widened: Mapping[Slice, float] | None = None,
    *,
    version: str = "2.3.1",
    since: pd.Timestamp = START,
    until: pd.Timestamp = END,
    seed: int = 1,
) -> pd.DataFrame:
    """The gap per slice of one version from START (or ``since`` for a new one) to ``until``;
    ``widened`` slices lose that much more from ONSET."""
    rng = np.random.default_rng(seed)
    times = TIMES[until >= TIMES]
    parts = []
    for (precision, eval_set), normal in NORMAL.items():
        extra = (widened or {}).get((precision, eval_set), 0.0)
        value = np.where(times >= ONSET, normal - extra, normal) + rng.normal(0, 0.002, len(times))
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": times,
                    "model_version": version,
                    "eval_set": eval_set,
                    "modality": EVAL_SETS[eval_set],
                    "precision": precision,
                    "value": value,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return frame if since <= START else frame[frame["timestamp"] >= since]


def gaps(current: pd.DataFrame) -> QueryResult:
    return result("quantization_issues_gap", current, gap_frame(seed=9), "ratio")


def fp32(dropped: Mapping[str, float] | None = None) -> QueryResult:
    rows = [
        (t, "2.3.1", s, m, 0.85 - ((dropped or {}).get(s, 0.0) if t >= ONSET else 0.0))
        for t in TIMES
        for s, m in EVAL_SETS.items()
    ]
    columns = ["timestamp", "model_version", "eval_set", "modality", "value"]
    frame = pd.DataFrame(rows, columns=columns)
    return result("quantization_issues_fp32_accuracy", frame, frame.assign(value=0.85), "ratio")


def model_info(rolled: Sequence[str] = (), *, at: pd.Timestamp = ONSET) -> QueryResult:
    rows = [
        (t, instance, "2.4.0" if instance in rolled and t >= at else "2.3.1", 1.0)
        for t in TIMES
        for instance in INSTANCES
    ]
    frame = pd.DataFrame(rows, columns=["timestamp", "instance", "model_version", "value"])
    return result("model_versions", frame.assign(model="mm-llm"), frame[:0], "")


def faults(shares: Mapping[tuple[str, str], tuple[float, float]]) -> QueryResult:
    """(precision, kind) -> (share before ONSET, share after), and the baseline at before."""
    rows, base = [], []
    for (precision, kind), (before, after) in shares.items():
        for t in TIMES:
            rows.append((t, precision, kind, after if t >= ONSET else before))
            base.append((t, precision, kind, before))
    columns = ["timestamp", "precision", "kind", "value"]
    return result(
        "quantization_issues_fault_share",
        pd.DataFrame(rows, columns=columns),
        pd.DataFrame(base, columns=columns),
        "ratio",
    )


def investigate(
    case: Incident,
    gap: QueryResult,
    *,
    versions: QueryResult | None = None,
    reference: QueryResult | None = None,
    fault_share: QueryResult | None = None,
) -> list[Finding]:
    """The notebook's cells in order, on hand-built results."""
    versions = versions if versions is not None else model_info()
    onset = qi.still_happening(case, gap)
    faulty = qi.numeric_faults(case, fault_share, onset) if fault_share is not None else ()
    dropped = qi.fp32_fell(case, reference if reference is not None else fp32(), onset)
    qi.which(case, gap, versions, onset, fp32_dropped=dropped, faulty=faulty)
    qi.resolution(case)
    return ranked(case.findings)


def causes(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.cause is not None]


# --- the gap, not its size -----------------------------------------------------------------------


def test_a_small_gap_that_widened_is_named_not_the_widest_gap_that_stayed() -> None:
    findings = investigate(incident(), gaps(gap_frame({("int4", "general"): 0.03})))

    top = findings[0]
    assert top.cause == "data"
    assert top.subject_values("precision") == ["int4"]
    assert top.subject_values("eval_set") == ["general"]
    assert top.severity == "warning"  # 3 points: between the 2 and 5 point thresholds
    assert "int4 on ocr" in top.title  # the widest gap is mentioned, and cleared
    assert not [f for f in causes(findings) if "ocr" in f.subject_values("eval_set")]


def test_every_eval_set_of_one_modality_names_the_modality() -> None:
    widened = {("int8", "audio-a"): 0.06, ("int8", "audio-b"): 0.06}
    top = investigate(incident(), gaps(gap_frame(widened)))[0]

    assert top.subject_values("modality") == ["audio"]
    assert top.subject_values("precision") == ["int8"]
    assert top.severity == "critical"
    assert top.cause == "config"


def test_when_fp32_fell_too_no_precision_is_blamed_and_accuracy_drop_is_named() -> None:
    # Every precision fell with fp32 on ocr: the gaps did not move at all.
    findings = investigate(incident(), gaps(gap_frame()), reference=fp32({"ocr": 0.06}))

    top = findings[0]
    assert top.subject_values("eval_set") == ["ocr"]
    assert "NOT a quantization problem" in top.title
    assert "workbook open accuracy-drop" in (top.recommendation or "")
    assert "--label service=svc" in (top.recommendation or "")
    assert not [f for f in causes(findings) if f.subject_values("precision")]


def test_fp32_falling_stops_the_blame_even_when_a_gap_moved() -> None:
    findings = investigate(
        incident(),
        gaps(gap_frame({("int4", "general"): 0.04})),
        reference=fp32({"general": 0.05}),
    )

    assert "NOT a quantization problem" in findings[0].title
    assert not [f for f in causes(findings) if f.subject_values("precision")]


# --- versions ---------------------------------------------------------------------------------


def test_a_version_is_named_when_the_old_version_evaluated_beside_it_kept_its_gap() -> None:
    worse = {(p, s): 0.04 for p, s in NORMAL if p == "int8"}
    current = pd.concat(
        [gap_frame(), gap_frame(worse, version="2.4.0", since=ONSET, seed=3)], ignore_index=True
    )
    findings = investigate(incident(), gaps(current), versions=model_info(INSTANCES[:3]))

    top = findings[0]
    assert top.cause == "rollout"
    assert top.subject_values("model_version") == ["2.4.0"]
    assert top.subject_values("precision") == ["int8"]
    slices = [f for f in findings if f.subject_values("slice")]
    assert slices and "explained by the version above" in slices[0].title


def test_a_version_rolled_out_after_the_gap_moved_on_every_version_is_not_blamed() -> None:
    widened = {("int8", "audio-a"): 0.05, ("int8", "audio-b"): 0.05}
    later = ONSET + timedelta(minutes=10)
    current = pd.concat(
        [gap_frame(widened), gap_frame(widened, version="2.4.0", since=later, seed=4)],
        ignore_index=True,
    )
    findings = investigate(incident(), gaps(current), versions=model_info(INSTANCES[2:], at=later))

    assert findings[0].subject_values("modality") == ["audio"]
    assert not [f for f in causes(findings) if f.subject_values("model_version")]
    assert any("does not follow it" in f.title for f in findings)


def test_serving_reads_the_newest_version_at_each_point() -> None:
    current = pd.concat(
        [gap_frame(), gap_frame({("int8", "ocr"): 0.04}, version="2.4.0", since=ONSET)],
        ignore_index=True,
    )
    frame = serving(current, ("precision", "eval_set"))
    after = frame[(frame["timestamp"] >= ONSET) & (frame["eval_set"] == "ocr")]

    assert set(frame.columns) == {"timestamp", "precision", "eval_set", "modality", "value"}
    assert after[after["precision"] == "int8"]["value"].median() == pytest.approx(-0.06, abs=0.003)


# --- numeric faults ---------------------------------------------------------------------------


def test_nan_outputs_on_one_precision_are_the_cause_and_explain_its_wider_gap() -> None:
    shares = {
        ("fp16", "nan"): (0.00005, 0.02),
        ("int4", "empty"): (0.0008, 0.0009),  # the largest share at baseline, unchanged
        ("int8", "overflow"): (0.0002, 0.0002),
    }
    widened = {("int8", s): 0.0 for s in EVAL_SETS} | {("int4", "audio-a"): 0.0}
    findings = investigate(incident(), gaps(gap_frame(widened)), fault_share=faults(shares))

    top = findings[0]
    assert top.cause == "limit"
    assert top.subject_values("precision") == ["fp16"]
    assert top.subject_values("kind") == ["nan"]
    assert top.severity == "critical"  # 2% of outputs, above the 1% threshold
    assert "fp32" in (top.recommendation or "")


def test_a_fault_share_that_barely_moved_is_not_named() -> None:
    shares = {("int4", "empty"): (0.0008, 0.0012), ("fp16", "nan"): (0.00005, 0.00005)}
    case = incident()

    assert qi.numeric_faults(case, faults(shares)) == ()
    assert all(f.severity == "info" for f in case.findings)


# --- quiet, thresholds, context ----------------------------------------------------------------


def test_a_quiet_run_says_so_first_and_blames_nothing() -> None:
    shares = {("int4", "empty"): (0.0008, 0.0008)}
    findings = investigate(incident(), gaps(gap_frame()), fault_share=faults(shares))

    assert findings[0].title.startswith("A quiet run")
    assert not [f for f in findings if f.severity == "critical"]


def test_a_team_can_raise_the_warning_threshold_and_an_unknown_name_is_an_error() -> None:
    strict = Config(
        runbooks={"quantization-issues": RunbookSettings(thresholds={"gap_widened_warning": 0.04})}
    )
    findings = investigate(incident(strict), gaps(gap_frame({("int4", "general"): 0.03})))
    # 3 points is below the team's 4: nothing is blamed, and nothing is critical.
    assert not [f for f in causes(findings) if f.subject_values("precision")]
    assert not [f for f in findings if f.severity == "critical"]

    typo = Config(runbooks={"quantization-issues": RunbookSettings(thresholds={"gap_wide": 1})})
    with pytest.raises(ConfigError, match="gap_widened_warning"):
        qi.THRESHOLDS.resolve(typo)


def test_quantized_precisions_being_faster_is_context_not_a_finding() -> None:
    rows = [(t, p, s) for t in TIMES for p, s in (("fp32", 2.4), ("int8", 0.9), ("int4", 0.8))]
    frame = pd.DataFrame(rows, columns=["timestamp", "precision", "value"])
    case = incident()
    qi.latency(case, result("quantization_issues_p99_by_precision", frame, frame, "seconds"))

    assert [f.severity for f in case.findings] == ["info"]
    assert "faster, as quantization should be" in case.findings[0].title


def test_the_gap_table_is_precision_by_eval_set_with_now_and_baseline_in_points() -> None:
    table = qi.gap_table(incident(), gaps(gap_frame({("int4", "general"): 0.03})))

    assert list(table.index) == ["int8", "int4"]
    assert set(table.columns) == set(EVAL_SETS)
    now, base = table.loc["int4", "general"].replace(")", "").split(" (")
    assert float(now) == pytest.approx(-6.5, abs=0.3)
    assert float(base) == pytest.approx(-3.5, abs=0.3)
    assert table.loc["int4", "ocr"].startswith("-12.")
