"""model-load-failure: its counting and its judgement on small hand-built frames.

The incident is the bundled demo's (offline, its recorded window); the query results are built
here from lists of load events, as ``sum by (...) (rate(model_load_total[5m]))`` would return
them, so each test plants exactly one situation and checks what a reader would: which finding
comes first, what it names, and what it tells them to do.
"""

from __future__ import annotations

import pandas as pd
import pytest

from workbooks.core.config import Config
from workbooks.core.findings import ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import model_load_failure as mlf
from workbooks.runbooks import steps
from workbooks.runbooks.model_load_failure_data import (
    attempted_versions,
    count_loads,
    rollback_target,
    version_key,
)
from workbooks.runbooks.model_load_failure_patterns import failure_onset

START = pd.Timestamp("2026-11-20 12:10", tz="UTC")  # the demo evidence's recorded window
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
INSTANCES = ("api-0", "api-1", "api-2", "api-3")
GIB = 1024**3

NO_SHIFT = pd.Timedelta(0)
# (instance, version, reason or "", minutes from the onset)
Event = tuple[str, str, str, float]


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def _incident() -> Incident:
    return Incident(
        runbook="model-load-failure",
        alert_name="ModelLoadFailure",
        labels={"service": "svc"},
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=Config(),
    )


def _reloads(version: str = "2.3.1", until: float = 40.0, skip: tuple[str, ...] = ()) -> list:
    """Every instance reloads `version` every 5 minutes over the window, but those in `skip`."""
    return [
        (i, version, "", m) for i in INSTANCES if i not in skip for m in range(-120, int(until), 5)
    ]


def _rates(events: list[Event], shift: pd.Timedelta = NO_SHIFT) -> pd.DataFrame:
    """What ``sum by (instance, model, model_version, result, reason) (rate(...[5m]))`` gives."""
    rows = []
    keys = sorted({(i, v, r) for i, v, r, _ in events})
    for instance, version, reason in keys:
        moments = [
            ONSET + pd.Timedelta(minutes=m) - shift
            for i, v, r, m in events
            if (i, v, r) == (instance, version, reason)
        ]
        for t in TIMES:
            count = sum(t - pd.Timedelta(minutes=5) < m <= t for m in moments)
            row = {"timestamp": t, "instance": instance, "model": "mm-llm"}
            row |= {"model_version": version, "result": "failure" if reason else "success"}
            rows.append(row | ({"reason": reason} if reason else {}) | {"value": count / 300})
    return pd.DataFrame(rows)


def _result(name: str, current: pd.DataFrame, baseline: pd.DataFrame | None, unit: str):
    window = _incident().window
    return QueryResult(name, name, "hand-built", unit, window, 60, current, baseline)


def _per_instance(values: dict[str, float], name: str, unit: str) -> QueryResult:
    frame = pd.DataFrame(
        [{"timestamp": t, "instance": i, "value": v} for t in TIMES for i, v in values.items()]
    )
    return _result(name, frame, None, unit)


def _durations(ratios: dict[str, float]) -> QueryResult:
    """p50 per version: 8 s, times `ratio` from the onset on (baseline 8 s)."""
    rows, before = [], []
    for version, ratio in ratios.items():
        for t in TIMES:
            later = ratio if t >= ONSET else 1.0
            rows.append({"timestamp": t, "model_version": version, "value": 8.0 * later})
            before.append({"timestamp": t, "model_version": version, "value": 8.0})
    return _result("model_load_failure_duration_p50", pd.DataFrame(rows), pd.DataFrame(before), "s")


def _run(
    events: list[Event],
    *,
    not_ready: tuple[str, ...] = (),
    limits: dict[str, float] | None = None,
    durations: dict[str, float] | None = None,
) -> Incident:
    """Every step of the notebook, in its order, on hand-built results."""
    incident = _incident()
    baseline = _rates(_reloads())
    loads = _result("model_load_failure_loads", _rates(events), baseline, "per_second")
    ready = _per_instance({i: 0.0 if i in not_ready else 1.0 for i in INSTANCES}, "ready", "")
    window = mlf.still_happening(incident, loads, ready)
    mlf.rollouts_seen(incident, loads, _result("builds", pd.DataFrame(), None, "count"))
    limit_by = mlf.load_table(
        incident,
        window,
        _per_instance({i: (limits or {}).get(i, 24.0) * GIB for i in INSTANCES}, "l", "bytes"),
        _per_instance({i: 11.0 * GIB for i in INSTANCES}, "memory", "bytes"),
    )
    verdicts = mlf.what_changed(incident, loads, window)
    p50 = _durations(durations or {"2.3.1": 1.0})
    timing = mlf.durations(incident, loads, p50, p50)
    mlf.failure_patterns(incident, window, verdicts, timing, limit_by)
    mlf.resolution(incident)
    return incident


def test_rates_integrate_into_counts_and_an_empty_reason_reads_as_success() -> None:
    events = [("api-0", "2.3.1", "", 1.0), ("api-0", "2.3.1", "", 21.0)]
    events += [("api-1", "2.3.1", "oom", 3.0)]
    loads = count_loads(_rates(events), 60)
    ok = loads.successes.set_index("instance")["count"].to_dict()
    assert ok == {"api-0": 2}
    assert loads.failures[["instance", "reason", "count"]].values.tolist() == [["api-1", "oom", 1]]


def test_a_version_that_never_loads_is_seen_in_its_attempts() -> None:
    events = _reloads(until=0) + [(i, "2.4.0", "checksum_mismatch", 1.0) for i in INSTANCES]
    found = steps.rollouts(attempted_versions(_rates(events)))
    assert [(r.version, r.units) for r in found] == [("2.4.0", INSTANCES)]


def test_versions_sort_by_number_and_the_rollback_target_loaded_everywhere() -> None:
    assert max(["2.9.1", "2.10.0", "2.3.1"], key=version_key) == "2.10.0"
    loads = count_loads(_rates([*_reloads(), ("api-2", "2.4.0", "", 10.0)]), 60)
    # 2.4.0 loaded on one instance only: the target is 2.3.1, and none without it.
    assert rollback_target(loads, loads, exclude=set()) == "2.3.1"
    assert rollback_target(loads, loads, exclude={"2.3.1"}) is None


def test_the_onset_is_the_start_of_the_last_run_of_failures() -> None:
    events = [("api-3", "2.3.1", "timeout", -60.0), ("api-0", "2.3.1", "oom", 0.0)]
    events += [("api-0", "2.3.1", "oom", 4.0)]
    assert failure_onset(_rates(events)) == ONSET


def test_a_version_failing_everywhere_is_named_with_the_rollback_command() -> None:
    events = _reloads(until=0) + [
        (i, "2.4.0", "checksum_mismatch", m) for i in INSTANCES for m in range(0, 40, 3)
    ]
    incident = _run(events, not_ready=INSTANCES)
    top = ranked(incident.findings)[0]
    assert top.cause == "rollout" and top.severity == "critical"
    assert top.subject["model_version"] == "2.4.0"
    assert top.subject["reason"] == "checksum_mismatch"
    assert "MODEL_VERSION=2.3.1" in (top.recommendation or "")


def test_oom_on_the_small_instances_is_the_limit_not_the_noisiest_instance() -> None:
    # api-3 had more failures (retried timeouts, recovered); api-0 and api-1 OOM since onset.
    events = _reloads(skip=("api-0", "api-1"))
    events += [("api-3", "2.3.1", "timeout", m) for m in range(-50, -10, 2)]
    events += [(i, "2.3.1", "oom", m) for i in ("api-0", "api-1") for m in range(0, 40, 4)]
    incident = _run(events, not_ready=("api-0", "api-1"), limits={"api-0": 12, "api-1": 12})
    top = ranked(incident.findings)[0]
    assert top.cause == "limit" and top.subject["instance"] == ["api-0", "api-1"]
    assert "12.00 GiB" in top.title and "--limits=memory=24Gi" in (top.recommendation or "")
    api3 = [f for f in incident.findings if f.subject.get("instance") == "api-3"]
    assert api3 and all(f.cause is None for f in api3)


def test_timeouts_everywhere_with_slower_loads_for_every_version_are_the_store() -> None:
    events = _reloads() + [(i, "2.3.1", "timeout", m) for i in INSTANCES for m in (12, 22, 33)]
    events += [("api-3", "2.4.0", "", m) for m in range(-100, 40, 5)]
    incident = _run(events, durations={"2.3.1": 9.0, "2.4.0": 8.0})
    top = ranked(incident.findings)[0]
    assert top.cause == "dependency" and top.subject["reason"] == "timeout"


def test_timeouts_without_slower_loads_are_not_blamed_on_the_store() -> None:
    events = _reloads() + [(i, "2.3.1", "timeout", m) for i in INSTANCES for m in (12, 22, 33)]
    incident = _run(events)
    # Nothing explains it: no cause is invented, the verdict says what was ruled out.
    assert not any(f.cause is not None for f in incident.findings)
    assert any(f.title.startswith("Nothing checked here explains") for f in incident.findings)


def test_one_retried_failure_is_a_quiet_run() -> None:
    incident = _run([*_reloads(), ("api-2", "2.3.1", "not_found", 2.0)])
    top = ranked(incident.findings)[0]
    assert top.title.startswith(steps.QUIET_PREFIX)
    assert not any(f.severity == "critical" for f in incident.findings)
