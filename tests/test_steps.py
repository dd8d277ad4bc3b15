"""The shared investigation steps on small hand-built frames: what a runbook author relies on.

Each incident is the bundled demo's (offline, its recorded window); the query results are
built here, so each test plants exactly one situation and checks what a reader would: which
finding comes first, what its subject names, and whether a version is blamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbooks.core.config import Config, RunbookSettings
from workbooks.core.errors import ConfigError
from workbooks.core.findings import Finding, ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import accuracy_drop, high_latency, high_memory, steps

START = pd.Timestamp("2026-11-20 12:10", tz="UTC")  # the demo evidence's recorded window
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")
INSTANCES = ("api-0", "api-1", "api-2", "api-3")
GIB = 1024**3


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(runbook: str = "high-latency", config: Config | None = None) -> Incident:
    return Incident(
        runbook=runbook,
        alert_name="Test",
        labels={"service": "svc"},
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=config or Config(),
    )


def levels(
    label: str,
    values: dict[str, tuple[float, float]],
    *,
    onset: pd.Timestamp = ONSET,
    noise: float = 0.01,
    seed: int = 1,
    **fixed: str,
) -> pd.DataFrame:
    """One series per value of ``label``: ``before`` until ``onset``, ``after`` from it."""
    rng = np.random.default_rng(seed)
    parts = []
    for value, (before, after) in values.items():
        level = np.where(onset <= TIMES, after, before)
        samples = level * (1 + rng.normal(0, noise, len(TIMES)))
        parts.append(pd.DataFrame({"timestamp": TIMES, label: value, **fixed, "value": samples}))
    return pd.concat(parts, ignore_index=True)


def result(name: str, current: pd.DataFrame, baseline: pd.DataFrame, unit: str) -> QueryResult:
    window = incident().window
    return QueryResult(name, name, "hand-built", unit, window, 60, current, baseline)


def model_info(
    rolled: Sequence[str], *, at: pd.Timestamp = ONSET, new: str = "2.4.0"
) -> QueryResult:
    """``model_info``: every instance on 2.3.1, ``rolled`` ones on ``new`` from ``at``."""
    rows = [
        (t, instance, new if instance in rolled and t >= at else "2.3.1", 1.0)
        for t in TIMES
        for instance in INSTANCES
    ]
    frame = pd.DataFrame(rows, columns=["timestamp", "instance", "model_version", "value"])
    return result("model_versions", frame.assign(model="mm-llm"), frame[:0], "")


def causes(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.cause is not None]


# --- the severity ladder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "direction", "expected"),
    [
        (2.5, "up", "critical"),
        (2.0, "up", "critical"),
        (1.5, "up", "warning"),
        (1.1, "up", "info"),
        (None, "up", "info"),
        (float("nan"), "up", "info"),
        (0.04, "down", "critical"),  # free disk share: lower is worse
        (0.08, "down", "warning"),
        (0.30, "down", "info"),
    ],
)
def test_one_function_maps_a_value_onto_the_ladder_either_way(
    value: float | None, direction: str, expected: str
) -> None:
    critical, warning = (2.0, 1.3) if direction == "up" else (0.05, 0.10)
    got = steps.severity_for(value, critical=critical, warning=warning, direction=direction)  # type: ignore[arg-type]
    assert got == expected


def test_a_team_overrides_a_runbooks_thresholds_in_its_config() -> None:
    thresholds = steps.Thresholds("high-latency", ratio_critical=2.0, ratio_warning=1.3, gap=1.4)
    config = Config(runbooks={"high-latency": RunbookSettings(thresholds={"ratio_critical": 3})})

    limits = thresholds.resolve(config)

    assert limits["ratio_critical"] == 3.0
    assert limits["gap"] == 1.4
    assert limits.severity(2.5, "ratio") == "warning"  # critical only from 3x now
    assert thresholds.resolve(Config()).severity(2.5, "ratio") == "critical"


def test_an_unknown_threshold_name_is_refused_naming_the_known_ones() -> None:
    thresholds = steps.Thresholds("high-latency", ratio_critical=2.0, ratio_warning=1.3)
    config = Config(runbooks={"high-latency": RunbookSettings(thresholds={"ratio_critcal": 3})})

    with pytest.raises(ConfigError, match=r"ratio_critcal.*known: ratio_critical, ratio_warning"):
        thresholds.resolve(config)


def test_an_override_that_turns_a_ladder_round_is_refused() -> None:
    thresholds = steps.Thresholds("high-latency", ratio_critical=2.0, ratio_warning=1.3)
    config = Config(runbooks={"high-latency": RunbookSettings(thresholds={"ratio_warning": 5})})

    with pytest.raises(ConfigError, match=r"ratio_critical .* must be at least ratio_warning"):
        thresholds.resolve(config)


def test_the_runbooks_read_their_thresholds_from_the_incidents_config() -> None:
    config = Config(runbooks={"high-latency": RunbookSettings(thresholds={"nonsense": 1})})

    with pytest.raises(ConfigError, match=r"high-latency does not have; known: .*moved_ratio"):
        high_latency.THRESHOLDS.of(incident(config=config))


# --- breakdown -----------------------------------------------------------------------------------


def table(by: str, rows: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """A top_contributors-shaped table from value -> (current, baseline)."""
    frame = pd.DataFrame(
        [(k, cur, base) for k, (cur, base) in rows.items()], columns=[by, "current", "baseline"]
    )
    return frame.assign(
        ratio=frame["current"] / frame["baseline"], delta=frame["current"] - frame["baseline"]
    )


def test_classify_names_the_values_that_stand_out_and_how_the_rest_moved() -> None:
    found = steps.classify(
        table("route", {"/a": (4.0, 1.0), "/b": (1.1, 1.0), "/c": (2.0, 2.0), "/d": (0.5, 0.5)}),
        by="route",
    )

    assert found.culprits == ("/a",)
    assert found.change == pytest.approx(4.0)
    assert found.others_change == pytest.approx(1.0)
    assert not found.spread


def test_classify_finds_two_culprits_on_any_label() -> None:
    found = steps.classify(
        table(
            "mountpoint",
            {"/": (3.0, 1.0), "/data": (2.6, 1.0), "/var": (1.05, 1.0), "/tmp": (1.0, 1.0)},
        ),
        by="mountpoint",
    )

    assert set(found.culprits) == {"/", "/data"}
    assert found.moved == ("/", "/data")


def test_classify_calls_an_even_change_spread_and_blames_no_one() -> None:
    found = steps.classify(
        table("instance", {"a": (2.0, 1.0), "b": (2.1, 1.0), "c": (1.9, 1.0)}), by="instance"
    )

    assert found.culprits == ()
    assert found.spread


def test_classify_reads_a_drop_the_same_way_as_a_rise() -> None:
    found = steps.classify(
        table("client_id", {"x": (10.0, 40.0), "y": (39.0, 40.0), "z": (41.0, 40.0)}),
        by="client_id",
        direction="down",
    )

    assert found.culprits == ("x",)
    assert found.change == pytest.approx(4.0)  # 40 -> 10 is a 4x drop


def test_classify_measures_accuracy_in_points_and_ignores_sets_that_improved() -> None:
    found = steps.classify(
        table(
            "eval_set",
            {"ocr": (0.87, 0.93), "general": (0.859, 0.86), "audio": (0.72, 0.71)},
        ),
        by="eval_set",
        measure="delta",
        direction="down",
        min_change=0.02,
        gap=2.0,
    )

    assert found.culprits == ("ocr",)
    assert found.change == pytest.approx(0.06)


def test_breakdown_records_the_culprits_as_a_list_with_the_cause_kind() -> None:
    case = incident()
    by_route = result(
        "latency_p99_by_route",
        levels(
            "route", {"/v1/vision": (0.25, 1.0), "/v1/chat": (0.5, 0.5), "/v1/embed": (0.08, 0.08)}
        ),
        levels(
            "route",
            {"/v1/vision": (0.25, 0.25), "/v1/chat": (0.5, 0.5), "/v1/embed": (0.08, 0.08)},
            seed=2,
        ),
        "seconds",
    )

    found = steps.breakdown(
        case,
        by_route,
        by="route",
        severity="critical",
        cause="dependency",
        recommendation="Look at {values}.",
    )

    assert found is not None and found.culprits == ("/v1/vision",)
    (finding,) = case.findings
    assert finding.subject == {"route": "/v1/vision"}
    assert finding.cause == "dependency"
    assert finding.recommendation == "Look at /v1/vision."
    assert "4.0x" in finding.title


def test_still_happening_says_so_and_leaves_the_symptom_on_the_trail() -> None:
    case = incident()
    by_route = result(
        "by_route",
        levels("route", {"/a": (1.0, 3.0), "/b": (1.0, 1.0)}),
        levels("route", {"/a": (1.0, 1.0), "/b": (1.0, 1.0)}, seed=3),
        "seconds",
    )

    recent = steps.still_happening(
        case,
        by_route,
        by="route",
        severity=steps.Thresholds("x", ratio_critical=2.0, ratio_warning=1.3)
        .resolve(Config())
        .ladder("ratio"),
    )

    assert recent is not None and recent.ongoing and recent.subject == {"route": "/a"}
    assert case.findings[0].title.startswith("Still happening: ")
    assert steps.trail(case).ongoing is True


# --- change correlation: THE RULE ----------------------------------------------------------------


def rollout(units: Sequence[str], at: pd.Timestamp = ONSET) -> steps.Rollout:
    return steps.Rollout("2.4.0", at, tuple(units))


def test_a_version_is_named_when_exactly_the_instances_that_took_it_changed() -> None:
    verdict = steps.judge_rollout(
        rollout(["api-1", "api-3"]),
        {"api-0": 1.0, "api-1": 3.0, "api-2": 1.05, "api-3": 2.8},
        onset=ONSET,
        min_change=1.5,
        gap=1.4,
    )

    assert verdict.named
    assert verdict.with_moved == ("api-1", "api-3")


def test_a_version_is_not_named_when_instances_without_it_changed_alike() -> None:
    verdict = steps.judge_rollout(
        rollout(["api-1", "api-3"]),
        {"api-0": 2.9, "api-1": 3.0, "api-2": 3.1, "api-3": 2.8},
        onset=ONSET,
        min_change=1.5,
        gap=1.4,
    )

    assert not verdict.named
    assert "without it changed alike" in verdict.reason


def test_a_version_is_not_named_when_the_instances_with_it_did_not_change() -> None:
    verdict = steps.judge_rollout(
        rollout(["api-1", "api-3"]),
        {"api-0": 3.0, "api-1": 1.0, "api-2": 1.0, "api-3": 1.1},
        onset=ONSET,
        min_change=1.5,
        gap=1.4,
    )

    assert not verdict.named


def test_a_version_on_every_instance_is_named_by_its_timing_alone() -> None:
    everywhere = {instance: 2.5 for instance in INSTANCES}

    near = steps.judge_rollout(rollout(INSTANCES), everywhere, onset=ONSET, min_change=1.5, gap=1.4)
    early = steps.judge_rollout(
        rollout(INSTANCES, at=ONSET - timedelta(hours=1)),
        everywhere,
        onset=ONSET,
        min_change=1.5,
        gap=1.4,
    )

    assert near.named and near.everywhere
    assert not early.named and "not near the onset" in early.reason


def test_correlate_names_the_version_and_its_instances_in_the_subject() -> None:
    case = incident()
    changes = {"api-0": 1.0, "api-1": 3.0, "api-2": 1.0, "api-3": 2.9}

    steps.correlate_rollouts(
        case, model_info(["api-1", "api-3"]), changes, onset=ONSET, severity="critical"
    )

    (finding,) = case.findings
    assert finding.cause == "rollout"
    assert finding.subject == {"model_version": "2.4.0", "instance": ["api-1", "api-3"]}


def test_correlate_says_a_rollout_the_change_does_not_follow() -> None:
    case = incident()

    steps.correlate_rollouts(
        case,
        model_info(["api-1"]),
        {i: 2.0 for i in INSTANCES},
        onset=ONSET,
        severity="critical",
        label="model_version",
    )

    (finding,) = case.findings
    assert finding.severity == "info" and finding.cause is None
    assert "rolled out" in finding.title and "does not follow it" in finding.title


def test_no_build_changed_says_which_version_it_means_beside_a_model_that_did() -> None:
    case = incident()
    changes = {"api-0": 1.0, "api-1": 3.0, "api-2": 1.0, "api-3": 2.9}
    no_builds = model_info([]).current[:0].rename(columns={"model_version": "version"})

    steps.correlate_rollouts(
        case, model_info(["api-1", "api-3"]), changes, onset=ONSET, severity="critical"
    )
    steps.correlate_rollouts(
        case,
        result("builds", no_builds, no_builds, ""),
        changes,
        onset=ONSET,
        severity="critical",
        label="version",
    )

    named, none = case.findings
    assert named.subject["model_version"] == "2.4.0"
    assert none.title == "No service build (version) changed in the window"


# --- the runbooks on the cases they were not tuned to ---------------------------------------------


def test_high_latency_blames_the_route_not_a_version_that_reached_some_instances() -> None:
    case = incident()
    # /v1/chat (the p99's tail on every instance) is slow everywhere; 2.4.0 reached two instances.
    routes = {"/v1/chat": (0.5, 2.0), "/v1/vision": (0.25, 0.25), "/v1/embed": (0.08, 0.08)}
    flat = {k: (v[0], v[0]) for k, v in routes.items()}
    by_route = result("by_route", levels("route", routes), levels("route", flat, seed=4), "seconds")
    instances = {i: (0.8, 2.0) for i in INSTANCES}
    before = {i: (0.8, 0.8) for i in INSTANCES}
    by_instance = result(
        "by_instance", levels("instance", instances), levels("instance", before, seed=5), "seconds"
    )

    high_latency.what_changed(case, model_info(["api-1", "api-3"]), by_instance, None)
    high_latency.where(case, by_route, by_instance, None)

    top = ranked(case.findings)[0]
    assert top.subject == {"route": "/v1/chat"} and top.cause is not None
    assert not [f for f in causes(case.findings) if "model_version" in f.subject]
    assert any("does not follow it" in f.title for f in case.findings)


def test_high_latency_blames_the_version_when_exactly_its_instances_slowed() -> None:
    case = incident()
    instances = {"api-0": (0.8, 0.8), "api-1": (0.8, 2.4), "api-2": (0.8, 0.8), "api-3": (0.8, 2.4)}
    before = {i: (0.8, 0.8) for i in INSTANCES}
    by_instance = result(
        "by_instance", levels("instance", instances), levels("instance", before, seed=6), "seconds"
    )
    flat = {"/v1/chat": (0.5, 0.5), "/v1/vision": (0.25, 0.25)}
    by_route = result("by_route", levels("route", flat), levels("route", flat, seed=7), "seconds")

    high_latency.what_changed(case, model_info(["api-1", "api-3"]), by_instance, None)
    high_latency.where(case, by_route, by_instance, None)

    top = ranked(case.findings)[0]
    assert top.cause == "rollout"
    assert top.subject == {"model_version": "2.4.0", "instance": ["api-1", "api-3"]}
    assert len(causes(case.findings)) == 1  # the instances' own finding is its symptom
    (slow,) = [f for f in case.findings if f.subject == {"instance": ["api-1", "api-3"]}]
    assert slow.recommendation is not None
    assert slow.recommendation.startswith("Drain api-1, api-3 and replace them; compare their")


@pytest.mark.parametrize(
    ("values", "advice"),
    [
        (["api-1"], "Drain api-1 and replace it; compare its logs."),
        (["api-1", "api-3"], "Drain api-1, api-3 and replace them; compare their logs."),
    ],
)
def test_a_recommendation_speaks_of_one_culprit_or_several(values: list[str], advice: str) -> None:
    assert steps.fill("Drain {values} and replace {it}; compare {its} logs.", values) == advice


def test_high_memory_blames_the_version_the_stepped_pods_loaded() -> None:
    case = incident("high-memory")
    sizes = {"api-0": 5.0, "api-1": 5.8, "api-2": 6.6, "api-3": 9.5}
    stepped = {
        i: (s * GIB, (s + (3 if i in ("api-0", "api-2") else 0)) * GIB) for i, s in sizes.items()
    }
    flat = {i: (s * GIB, s * GIB) for i, s in sizes.items()}
    memory = result(
        "memory",
        levels("instance", stepped, noise=0.002),
        levels("instance", flat, noise=0.002, seed=8),
        "bytes",
    )
    limit = levels("instance", {i: (16 * GIB, 16 * GIB) for i in INSTANCES}, noise=0.0)
    limits = result("limits", limit, limit[:0], "bytes")

    high_memory.growth(case, memory, limits, model_info(["api-0", "api-2"]))

    top = ranked(case.findings)[0]
    assert top.cause == "rollout"
    assert top.subject == {"model_version": "2.4.0", "instance": ["api-0", "api-2"]}


def accuracy_frame(
    drops: dict[tuple[str, str], float], *, rolled_at: pd.Timestamp, onset: pd.Timestamp = ONSET
) -> pd.DataFrame:
    """Accuracy per (version, eval set): 2.3.1 all along, 2.4.0 from ``rolled_at``; ``drops``
    subtracts from ``onset`` on."""
    sets = {
        "general": ("text", 0.86),
        "vision-qa": ("image", 0.81),
        "ocr": ("image", 0.93),
        "audio-transcribe": ("audio", 0.71),
    }
    rng = np.random.default_rng(9)
    parts = []
    for version, since in (("2.3.1", START), ("2.4.0", rolled_at)):
        times = TIMES[since <= TIMES]
        for eval_set, (modality, level) in sets.items():
            drop = np.where(times >= onset, drops.get((version, eval_set), 0.0), 0.0)
            values = level - drop + rng.normal(0, 0.003, len(times))
            parts.append(
                pd.DataFrame(
                    {
                        "timestamp": times,
                        "model": "mm-llm",
                        "model_version": version,
                        "eval_set": eval_set,
                        "modality": modality,
                        "value": values,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def test_accuracy_names_the_modality_not_a_version_when_every_version_dropped_alike() -> None:
    case = incident("accuracy-drop")
    both = {(v, s): 0.06 for v in ("2.3.1", "2.4.0") for s in ("vision-qa", "ocr")}
    current = accuracy_frame(both, rolled_at=ONSET - timedelta(minutes=5))
    baseline = accuracy_frame({}, rolled_at=END + timedelta(hours=1))
    accuracy = result("accuracy", current, baseline, "ratio")

    high_onset = accuracy_drop.still_happening(case, accuracy)
    accuracy_drop.which(
        case, accuracy, model_info(["api-1", "api-2"], at=ONSET - timedelta(minutes=5)), high_onset
    )

    top = ranked(case.findings)[0]
    assert top.subject.get("modality") == "image", top
    assert set(top.subject_values("eval_set")) == {"vision-qa", "ocr"}
    assert not [f for f in causes(case.findings) if "model_version" in f.subject]
    assert any("does not follow it" in f.title for f in case.findings)


def test_accuracy_names_the_version_when_only_it_dropped() -> None:
    case = incident("accuracy-drop")
    current = accuracy_frame({("2.4.0", "ocr"): 0.08}, rolled_at=ONSET)
    baseline = accuracy_frame({}, rolled_at=END + timedelta(hours=1))
    accuracy = result("accuracy", current, baseline, "ratio")

    onset = accuracy_drop.still_happening(case, accuracy)
    accuracy_drop.which(case, accuracy, model_info(["api-1", "api-2"]), onset)

    top = ranked(case.findings)[0]
    assert top.cause == "rollout"
    assert top.subject["model_version"] == "2.4.0" and top.subject["eval_set"] == "ocr"


# --- the verdict ---------------------------------------------------------------------------------


def symptom_only(case: Incident, *, ongoing: bool, **extra: Any) -> None:
    case.record(Finding(severity="critical", title="p99 rose 3x", subject={"service": "svc"}))
    steps.checked(case, "routes: none stands out (largest 1.1x on /v1/chat)")
    steps.checked(case, "rollouts: no model_version changed in the window")
    steps.symptom(case, ongoing=ongoing)


@pytest.mark.parametrize(("ongoing", "severity"), [(True, "warning"), (False, "info")])
def test_with_no_cause_one_inconclusive_finding_lists_what_was_ruled_out(
    ongoing: bool, severity: str
) -> None:
    case = incident()
    symptom_only(case, ongoing=ongoing)

    verdict = steps.conclude(case, quiet="A quiet run: fine.", next_steps=["Widen the window."])

    assert verdict is not None and verdict.severity == severity
    assert verdict.cause is None  # the largest number is not promoted to a cause
    assert "routes: none stands out" in verdict.detail and "no model_version" in verdict.detail
    assert verdict.recommendation == "Widen the window."
    assert len([f for f in case.findings if f is verdict]) == 1


def test_a_run_where_nothing_is_wrong_is_a_quiet_run_ranked_first() -> None:
    case = incident()
    case.record(Finding(severity="info", title="Traffic is normal", subject={"service": "svc"}))

    steps.conclude(case, quiet="A quiet run: nothing moved.", next_steps=["Nothing."])

    assert ranked(case.findings)[0].title.startswith("A quiet run")


def test_a_named_cause_needs_no_verdict() -> None:
    case = incident()
    case.record(Finding(severity="warning", title="api-1 leaks", cause="instance"))

    assert steps.conclude(case, quiet="A quiet run.", next_steps=["x"]) is None


def test_high_latency_with_nothing_standing_out_is_inconclusive_not_a_guess() -> None:
    case = incident()
    # Every route and instance slowed alike, no rollout, traffic unchanged: nothing explains it.
    routes = {"/v1/chat": (0.5, 1.25), "/v1/vision": (0.25, 0.62), "/v1/embed": (0.08, 0.2)}
    by_route = result(
        "by_route",
        levels("route", routes),
        levels("route", {k: (v[0], v[0]) for k, v in routes.items()}, seed=10),
        "seconds",
    )
    instances = {i: (0.8, 2.0) for i in INSTANCES}
    by_instance = result(
        "by_instance",
        levels("instance", instances),
        levels("instance", {i: (0.8, 0.8) for i in INSTANCES}, seed=11),
        "seconds",
    )
    p99 = result(
        "p99",
        levels("quantile", {"0.99": (0.8, 2.0)}),
        levels("quantile", {"0.99": (0.8, 0.8)}, seed=12),
        "seconds",
    )
    empty = result("p50", p99.current[:0], p99.current[:0], "seconds")

    high_latency.still_happening(case, p99, by_route)
    onset = high_latency.overview(case, empty, empty, p99)
    high_latency.what_changed(case, model_info([]), by_instance, onset)
    high_latency.where(case, by_route, by_instance, onset)
    high_latency.resolution(case)

    assert not causes(case.findings)
    (verdict,) = [f for f in case.findings if f.title.startswith("Nothing checked here")]
    assert verdict.severity == "warning"  # the symptom is still there
    assert "p99 by route: spread" in verdict.detail
    assert "rollouts: no model version (model_version) changed" in verdict.detail
    assert ranked(case.findings)[0].severity == "critical"  # the symptom, not a made-up cause


def test_a_cause_is_at_least_as_severe_as_the_ongoing_symptom_it_explains() -> None:
    case = incident()
    symptom = Finding(severity="critical", title="Still happening", subject={"eval_set": "ocr"})
    case.record(symptom)
    steps.symptom(case, ongoing=True, finding=symptom)

    explains = steps.as_severe_as_symptom(case, "warning", {"eval_set": ["ocr", "vision-qa"]})
    elsewhere = steps.as_severe_as_symptom(case, "warning", {"eval_set": "general"})
    steps.symptom(case, ongoing=False, finding=symptom)
    over = steps.as_severe_as_symptom(case, "warning", {"eval_set": "ocr"})

    assert (explains, elsewhere, over) == ("critical", "warning", "warning")
