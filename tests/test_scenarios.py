"""The synthetic scenarios: first the OpenMetrics text itself, then a real Prometheus loaded with it
to show that every sample arrives and that each planted cause (and only it) is visible in PromQL.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import NamedTuple

import jinja2
import pytest

import workbooks.synthetic.scenarios as scenarios_package
from workbooks.core.errors import UnknownRunbookError
from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import (
    INSTANCES,
    ROUTES,
    Scenario,
    all_cases,
    causes,
    make_scenario,
    runbooks,
    write_history,
    write_openmetrics,
)
from workbooks.synthetic.scenarios.accuracy_drop import EVAL_SETS
from workbooks.synthetic.scenarios.registry import register

ROOT = Path(__file__).resolve().parents[1]
ONSET = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
CAUSES = causes()
ALL_CAUSES = [(runbook, cause) for runbook, causes in CAUSES.items() for cause in causes]


def service_name(runbook: str, cause: str) -> str:
    return f"{runbook}-{cause}".replace("_", "-")


@cache
def scenario_text(runbook: str, cause: str) -> tuple[Scenario, str]:
    scenario = make_scenario(runbook, cause, seed=7, onset=ONSET)
    return scenario, scenario.openmetrics()


def parse(text: str) -> dict[str, list[tuple[int, float]]]:
    """Series text ('name{labels}') -> [(timestamp in seconds, value)] in file order."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line.startswith("#"):
            name_and_labels, value, timestamp = line.rsplit(" ", 2)
            series[name_and_labels].append((int(timestamp), float(value)))
    return series


# --- the text --------------------------------------------------------------------------------


def test_same_seed_gives_the_same_text_and_another_seed_does_not() -> None:
    first = make_scenario("high-latency", "slow_route", seed=3, onset=ONSET).openmetrics()
    again = make_scenario("high-latency", "slow_route", seed=3, onset=ONSET).openmetrics()
    other = make_scenario("high-latency", "slow_route", seed=4, onset=ONSET).openmetrics()
    assert first == again
    assert first != other


@pytest.mark.parametrize(("runbook", "cause"), ALL_CAUSES)
def test_samples_are_timestamped_in_seconds_inside_the_two_windows(
    runbook: str, cause: str
) -> None:
    scenario, text = scenario_text(runbook, cause)
    assert text.endswith("\n# EOF\n")
    assert text.count("# EOF") == 1
    windows = [(int(a.timestamp()), int(b.timestamp())) for a, b in scenario.history_windows]
    step = int(scenario.step.total_seconds())
    for name, samples in parse(text).items():
        times = [timestamp for timestamp, _ in samples]
        assert times == sorted(set(times)), f"{name}: samples out of order or repeated"
        for timestamp in times:
            assert any(start <= timestamp <= end for start, end in windows), (name, timestamp)
            assert (timestamp - windows[-1][0]) % step == 0


@pytest.mark.parametrize(("runbook", "cause"), ALL_CAUSES)
def test_counters_only_grow_except_at_a_restart(runbook: str, cause: str) -> None:
    scenario, text = scenario_text(runbook, cause)
    # The restarts a cause plants (a model rollout or a deploy that restarted the process).
    fleet = scenario.fleet()
    restarts = {i: fleet.restarted_at(i) for i in INSTANCES if fleet.restarted_at(i) is not None}
    checked = 0
    # Gauges may end in _count too (postgres_exporter's pg_stat_activity_count): the family's
    # declared type decides, and a counter may lack _total (pg_stat_database_deadlocks).
    gauges = set(re.findall(r"^# TYPE (\S+) gauge$", text, flags=re.MULTILINE))
    counters = set(re.findall(r"^# TYPE (\S+) counter$", text, flags=re.MULTILINE))
    for name, samples in parse(text).items():
        metric = name.split("{")[0]
        if metric in gauges or not (metric.endswith(COUNTER_SUFFIXES) or metric in counters):
            continue
        checked += 1
        drops = [t for (_, a), (t, b) in itertools.pairwise(samples) if b < a]
        # A counter drops only where its instance restarted. The fleet's own request counters
        # reset there every time; a runbook's own counter may belong to a part that survived
        # (model-load-failure's loads are counted by the server, not by the model worker).
        last = samples[-1][0]
        restarted = [int(at) for i, at in restarts.items() if f'instance="{i}"' in name]
        assert set(drops) <= set(restarted), name
        if metric == "http_requests_total":
            assert drops == [at for at in restarted if at <= last], name
    if not checked:  # filesystem gauges only (low-disk-space): nothing to check
        pytest.skip(f"{runbook} writes no counters")


def test_histogram_buckets_are_cumulative_and_inf_equals_count() -> None:
    _, text = scenario_text("high-latency", "bad_version")
    series = parse(text)
    for instance in INSTANCES:
        for route in ROUTES:
            labels = f'service="inference-api",instance="{instance}",route="{route}"'
            buckets = [
                values
                for name, values in series.items()
                if name.startswith(f"http_request_duration_seconds_bucket{{{labels},")
            ]
            assert len(buckets) == 9  # file order is le order, +Inf last
            for row in zip(*buckets, strict=True):
                counts = [value for _, value in row]
                assert counts == sorted(counts)
            count = series[f"http_request_duration_seconds_count{{{labels}}}"]
            assert buckets[-1] == count


@pytest.mark.parametrize("runbook", list(CAUSES))
def test_a_cause_and_its_quiet_control_share_everything_before_onset(runbook: str) -> None:
    onset = int(ONSET.timestamp())

    def before_onset(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if not line.startswith("#") and int(line.rsplit(" ", 1)[1]) < onset
        ]

    _, planted = scenario_text(runbook, CAUSES[runbook][0])
    _, quiet = scenario_text(runbook, "none")
    assert before_onset(planted) == before_onset(quiet)
    assert planted != quiet


def test_write_openmetrics_merges_families_and_refuses_a_repeated_service(tmp_path: Path) -> None:
    scenarios = [
        make_scenario("high-memory", "leak", onset=ONSET, service="a"),
        make_scenario("high-latency", "none", onset=ONSET, service="b"),
    ]
    text = write_openmetrics(scenarios, tmp_path / "h.om").read_text()
    headers = re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE)
    assert len(headers) == len(set(headers))  # families are never interleaved
    assert len(parse(text)) == len(parse(scenarios[0].openmetrics())) + len(
        parse(scenarios[1].openmetrics())
    )
    with pytest.raises(ValueError, match="distinct services"):
        write_openmetrics([scenarios[0], scenarios[0]], tmp_path / "twice.om")


def test_history_for_promtool_is_cut_by_block_and_holds_every_sample_once(tmp_path: Path) -> None:
    scenarios = [
        make_scenario("high-memory", "leak", onset=ONSET, service="a"),
        make_scenario("high-latency", "slow_route", onset=ONSET, service="b", days_between=7),
    ]
    files = write_history(scenarios, tmp_path / "history")
    whole = parse(write_openmetrics(scenarios, tmp_path / "h.om").read_text())
    cut: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in files:
        text = path.read_text()
        assert text.endswith("# EOF\n")
        samples = parse(text)
        blocks = {t // 7200 for series in samples.values() for t, _ in series}
        assert len(blocks) == 1, f"{path.name} spans blocks {sorted(blocks)}"
        families = {name.split("{")[0] for name in samples}
        headers = re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE)
        assert len(headers) == len(set(headers))
        assert all(any(name.startswith(h) for h in headers) for name in families)
        for name, series in samples.items():
            cut[name] += series
    assert len(files) > 2, "a week between baseline and incident is more than two blocks"
    assert cut == whole  # every sample, once, each series still in time order
    with pytest.raises(ValueError, match="distinct services"):
        write_history([scenarios[0], scenarios[0]], tmp_path / "twice")


@pytest.mark.parametrize(
    ("runbook", "alertname", "severity"),
    [
        ("high-latency", "HighLatency", "critical"),
        ("high-memory", "HighMemoryUsage", "warning"),
        ("accuracy-drop", "ModelAccuracyDrop", "critical"),
    ],
)
def test_alert_payload_is_a_v4_webhook_that_does_not_name_the_culprit(
    runbook: str, alertname: str, severity: str
) -> None:
    scenario = make_scenario(runbook, CAUSES[runbook][0], onset=ONSET)
    payload = scenario.alert_payload()
    (alert,) = payload["alerts"]
    labels = {"alertname": alertname, "service": "inference-api", "severity": severity}
    assert alert["labels"] == payload["commonLabels"] == labels
    assert set(alert["annotations"]) == {"summary", "description"}
    assert alert["startsAt"] == "2026-11-27T14:35:00Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"].startswith("http://prometheus.example/graph?g0.expr=")
    assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    if alertname == "HighLatency":  # what Alertmanager 0.25 reported for these labels
        assert alert["fingerprint"] == "2ef4d53f7bbadc35"
    assert payload["version"] == "4"
    assert payload["status"] == alert["status"] == "firing"
    assert payload["groupKey"] == f'{{}}:{{alertname="{alertname}", service="inference-api"}}'
    assert payload["groupLabels"]["alertname"] == alertname
    assert payload["truncatedAlerts"] == 0
    visible = json.dumps(payload["alerts"][0]["labels"]) + json.dumps(alert["annotations"])
    for value in scenario.affected.values():
        assert value not in visible


def test_make_scenario_fills_defaults_and_rejects_what_cannot_be_generated() -> None:
    scenario = make_scenario("high-latency", "bad_version", affected={"instance": "api-2"})
    assert scenario.affected == {"model_version": "2.4.0", "instance": "api-2"}
    assert scenario.magnitude == 3.0
    expected_onset = datetime.now(UTC) - timedelta(minutes=30)
    assert abs(scenario.onset - expected_onset) < timedelta(minutes=1.1)
    assert scenario.onset.second == 0
    assert scenario.end == scenario.onset + timedelta(minutes=40)
    assert scenario.alert_starts_at == scenario.onset + timedelta(minutes=5)
    with pytest.raises(UnknownRunbookError, match="no scenario"):
        make_scenario("high-latency", "leak")
    with pytest.raises(UnknownRunbookError, match=r"known: accuracy-drop, .*high-latency"):
        make_scenario("no-such-runbook", "leak")
    with pytest.raises(ValueError, match="timezone"):
        make_scenario("high-memory", "leak", onset=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="known"):
        make_scenario("high-latency", "slow_route", affected={"route": "/v2/nope"})
    with pytest.raises(ValueError, match="baseline"):
        make_scenario("high-memory", "none", baseline=timedelta(hours=1))


# --- the runbook modules --------------------------------------------------------------------


def test_runbook_modules_are_found_by_looking() -> None:
    package = Path(scenarios_package.__file__).parent
    declared = sorted(
        path.stem.replace("_", "-")
        for path in package.glob("*.py")
        if re.search(r"^RUNBOOK = ", path.read_text(), flags=re.MULTILINE)
    )
    assert sorted(runbooks()) == declared
    ids = [case.id for case in all_cases()]
    assert len(ids) == len(set(ids)), "case ids are folder names under tests/data/cases"


@pytest.mark.parametrize("runbook", sorted(CAUSES))
def test_every_runbook_plants_enough_kinds_of_cause(runbook: str) -> None:
    """Three culprits, a change that is not the cause, a quiet control; all generate."""
    cases = runbooks()[runbook].cases
    culprits = {json.dumps(case.expect, sort_keys=True) for case in cases if case.expect}
    assert len(culprits) >= 3, culprits
    assert any(not case.expect for case in cases), "a quiet control"
    assert any(case.not_named for case in cases), "a change that is not the cause"
    for case in cases:
        assert case.scenario.service == f"svc-{case.id}"
        assert set(case.scenario.affected) == set(runbooks()[runbook].causes[case.cause].affected)


def test_the_new_runbook_template_renders_a_module_that_generates(tmp_path: Path) -> None:
    template = jinja2.Template((ROOT / "templates" / "new" / "scenario.py.j2").read_text())
    text = template.render(
        runbook="disk-fill",
        module="disk_fill",
        title='Disk "fills"',
        group="infrastructure",
        alerts=["DiskFill", "HostOutOfDiskSpace"],
    )
    path = tmp_path / "disk_fill.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("disk_fill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = register(module)
    try:
        assert declared.runbook == "disk-fill" and declared.alert.alertname == "DiskFill"
        case = declared.cases[0]
        payload = case.scenario.alert_payload()
        assert payload["commonLabels"]["alertname"] == "DiskFill"
        assert payload["commonAnnotations"]["summary"] == f'Disk "fills" on svc-{case.id}'
        series = parse(case.scenario.openmetrics())
        assert any(name.startswith("disk_fill_todo{") for name in series)
    finally:
        runbooks().pop("disk-fill")


# --- a real Prometheus -----------------------------------------------------------------------


class Loaded(NamedTuple):
    server: PrometheusServer
    scenarios: dict[tuple[str, str], Scenario]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """One Prometheus holding every scenario (one service each), its onset 30 minutes ago."""
    if not prometheus_available():
        pytest.skip("needs prometheus and promtool (Debian package 'prometheus')")
    onset = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    scenarios = {
        (runbook, cause): make_scenario(
            runbook, cause, seed=11, onset=onset, service=service_name(runbook, cause)
        )
        for runbook, cause in ALL_CAUSES
    }
    server = start_prometheus(list(scenarios.values()), tmp_path_factory.mktemp("prometheus"))
    yield Loaded(server, scenarios)
    server.stop()


def values_by(server: PrometheusServer, expr: str, label: str, at: datetime) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in server.query(expr, at)}


def labels_by(server: PrometheusServer, expr: str, key: str, label: str, at: datetime) -> dict:
    return {r["metric"][key]: r["metric"][label] for r in server.query(expr, at)}


def now_and_baseline(
    server: PrometheusServer, scenario: Scenario, expr: str, label: str
) -> tuple[dict[str, float], dict[str, float]]:
    # At `end` every rate window lies after onset; one `baseline` earlier is the same hour of day.
    now = values_by(server, expr, label, scenario.end)
    before = values_by(server, expr, label, scenario.end - scenario.baseline)
    assert now and set(now) == set(before), expr
    return now, before


def p99(service: str, by: str) -> str:
    return (
        f"histogram_quantile(0.99, sum by ({by}, le) "
        f'(rate(http_request_duration_seconds_bucket{{service="{service}"}}[5m])))'
    )


def ratios(now: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: now[key] / before[key] for key in now}


def assert_unchanged(ratio: dict[str, float], keys: set[str]) -> None:
    for key in keys:
        assert 0.75 < ratio[key] < 1.33, (key, ratio[key])


@pytest.mark.prometheus
def test_history_ending_in_the_future_is_queryable_as_soon_as_ready(loaded: Loaded) -> None:
    scenario = loaded.scenarios["high-memory", "none"]
    assert scenario.end > datetime.now(UTC)  # the default after_onset runs 10 min past "now"
    expr = f'max(timestamp(model_info{{service="{scenario.service}"}}))'
    (newest,) = loaded.server.query(expr, scenario.end)
    assert float(newest["value"][1]) == scenario.end.timestamp()
    assert loaded.server.ready_seconds < 5


@pytest.mark.prometheus
@pytest.mark.parametrize(("runbook", "cause"), ALL_CAUSES)
def test_prometheus_holds_every_series_and_sample(loaded: Loaded, runbook: str, cause: str) -> None:
    scenario = loaded.scenarios[runbook, cause]
    # Series an exporter writes without a service label (postgres_exporter's) are told apart by
    # an instance named after the scenario instead; this test selects by service.
    own = f'service="{scenario.service}"'
    series = {
        name: samples for name, samples in parse(scenario.openmetrics()).items() if own in name
    }
    names = {name.split("{")[0] for name in series}
    for start, end in scenario.history_windows:
        inside = {
            name: sum(start.timestamp() <= t <= end.timestamp() for t, _ in samples)
            for name, samples in series.items()
        }
        own = f'service="{scenario.service}"'
        stored = loaded.server.series(f"{{{own}}}", start, end)
        assert len(stored) == sum(1 for key, count in inside.items() if count and own in key)
        # count_over_time drops the metric name, so one metric at a time; both ends of a range
        # are inclusive in Prometheus 2.x, and the other window is a day away.
        window = f"{int((end - start).total_seconds()) + 30}s"
        for name in names:
            expected = sum(c for k, c in inside.items() if k.startswith(name + "{") and own in k)
            if not expected:
                continue
            selector = f"{name}{{{own}}}[{window}]"
            (samples,) = loaded.server.query(f"sum(count_over_time({selector}))", end)
            assert int(samples["value"][1]) == expected, name
        # Series without the service's label (a dependency's up, kube-state-metrics) are the
        # case's own by other labels: each one, whole.
        for key, count in inside.items():
            if count and own not in key:
                (samples,) = loaded.server.query(f"count_over_time({key}[{window}])", end)
                assert int(samples["value"][1]) == count, key


@pytest.mark.prometheus
def test_slow_route_shows_on_its_route_only(loaded: Loaded) -> None:
    scenario = loaded.scenarios["high-latency", "slow_route"]
    culprit, magnitude = scenario.affected["route"], scenario.magnitude
    now, before = now_and_baseline(loaded.server, scenario, p99(scenario.service, "route"), "route")
    by_route = ratios(now, before)
    assert 0.6 * magnitude < by_route[culprit] < 1.5 * magnitude
    assert_unchanged(by_route, set(ROUTES) - {culprit})
    assert max(now, key=now.__getitem__) == "/v1/audio"  # the slowest is not the culprit
    expr = p99(scenario.service, "instance")
    by_instance = ratios(*now_and_baseline(loaded.server, scenario, expr, "instance"))
    assert max(by_instance.values()) / min(by_instance.values()) < 1.2  # no instance stands out


@pytest.mark.prometheus
def test_bad_version_shows_on_the_instances_that_got_it(loaded: Loaded) -> None:
    scenario = loaded.scenarios["high-latency", "bad_version"]
    service, magnitude = scenario.service, scenario.magnitude
    rolled = set(scenario.affected["instance"].split(","))
    expr = p99(service, "instance")
    by_instance = ratios(*now_and_baseline(loaded.server, scenario, expr, "instance"))
    for instance in rolled:
        assert 0.6 * magnitude < by_instance[instance] < 1.5 * magnitude
    assert_unchanged(by_instance, set(INSTANCES) - rolled)
    info = f'model_info{{service="{service}"}}'
    versions = labels_by(loaded.server, info, "instance", "model_version", scenario.end)
    assert versions == {i: "2.4.0" if i in rolled else "2.3.1" for i in INSTANCES}
    cpu = f'rate(process_cpu_seconds_total{{service="{service}"}}[5m])'
    cpu_ratio = ratios(*now_and_baseline(loaded.server, scenario, cpu, "instance"))
    assert all(cpu_ratio[instance] > 1.4 for instance in rolled)
    assert_unchanged(cpu_ratio, set(INSTANCES) - rolled)


@pytest.mark.prometheus
def test_quiet_latency_control_changes_nothing(loaded: Loaded) -> None:
    scenario = loaded.scenarios["high-latency", "none"]
    for label, keys in (("route", set(ROUTES)), ("instance", set(INSTANCES))):
        expr = p99(scenario.service, label)
        assert_unchanged(ratios(*now_and_baseline(loaded.server, scenario, expr, label)), keys)
    info = f'model_info{{service="{scenario.service}"}}'
    versions = labels_by(loaded.server, info, "instance", "model_version", scenario.end)
    assert versions == dict.fromkeys(INSTANCES, "2.3.1")


@pytest.mark.prometheus
@pytest.mark.parametrize("cause", CAUSES["high-memory"])
def test_memory_cause_shows_on_its_instance_only(loaded: Loaded, cause: str) -> None:
    scenario = loaded.scenarios["high-memory", cause]
    service, magnitude, end = scenario.service, scenario.magnitude, scenario.end
    culprits = scenario.affected.get("instance", "").split(",")
    rss_gib = f'process_resident_memory_bytes{{service="{service}"}} / 2^30'
    now, before = now_and_baseline(loaded.server, scenario, rss_gib, "instance")
    growth_expr = f'deriv(process_resident_memory_bytes{{service="{service}"}}[30m]) * 3600 / 2^30'
    gib_per_hour = values_by(loaded.server, growth_expr, "instance", end)
    restart_expr = f'changes(process_start_time_seconds{{service="{service}"}}[1h])'
    restarts = values_by(loaded.server, restart_expr, "instance", end)
    info = f'model_info{{service="{service}"}}'
    versions = labels_by(loaded.server, info, "instance", "model_version", end)
    assert max(now, key=now.__getitem__) == "api-3"  # the largest is not the culprit
    hours_after = scenario.after_onset.total_seconds() / 3600
    for instance in INSTANCES:
        leaking = cause in ("leak", "leak_during_rollout") and instance in culprits
        stepped = cause == "step" and instance in culprits
        rolled = scenario.affected.get("rolled_out", "").split(",")
        growth = magnitude if leaking else 0.0
        jump = magnitude * hours_after if leaking else magnitude if stepped else 0.0
        assert abs(gib_per_hour[instance] - growth) < 0.3, (instance, gib_per_hour[instance])
        assert abs(now[instance] - before[instance] - jump) < 0.3, (instance, now, before)
        assert restarts[instance] == (1 if stepped or instance in rolled else 0)
        assert versions[instance] == ("2.4.0" if stepped or instance in rolled else "2.3.1")


@pytest.mark.prometheus
@pytest.mark.parametrize("cause", CAUSES["accuracy-drop"])
def test_accuracy_cause_shows_on_its_eval_set_only(loaded: Loaded, cause: str) -> None:
    scenario = loaded.scenarios["accuracy-drop", cause]
    service, affected = scenario.service, scenario.affected
    rolled = {
        "version_regression": set(INSTANCES),
        "modality_drop": set(affected.get("instance", "").split(",")),
    }.get(cause, set())
    info = f'model_info{{service="{service}"}}'
    versions = labels_by(loaded.server, info, "instance", "model_version", scenario.end)
    assert versions == {i: "2.4.0" if i in rolled else "2.3.1" for i in INSTANCES}
    accuracy = 'avg_over_time(model_eval_accuracy{{service="{}",model_version="{}"}}[20m])'
    before_at = scenario.end - scenario.baseline
    before = values_by(loaded.server, accuracy.format(service, "2.3.1"), "eval_set", before_at)
    for version in set(versions.values()):
        now = values_by(loaded.server, accuracy.format(service, version), "eval_set", scenario.end)
        assert set(now) == set(before) == set(EVAL_SETS)
        for eval_set in now:
            hit = (version == "2.4.0" and eval_set == affected.get("eval_set")) or (
                EVAL_SETS[eval_set][0] == affected.get("modality")
            )
            expected = -scenario.magnitude if hit else 0.0
            assert abs(now[eval_set] - before[eval_set] - expected) < 0.01, (version, eval_set)
        assert min(now, key=now.__getitem__) == "audio-transcribe"  # the lowest is not the culprit


@pytest.mark.prometheus
def test_innocent_rollout_lands_before_a_slow_route_that_slows_every_instance(
    loaded: Loaded,
) -> None:
    scenario = loaded.scenarios["high-latency", "innocent_rollout"]
    culprit, magnitude = scenario.affected["route"], scenario.magnitude
    by_route = ratios(
        *now_and_baseline(loaded.server, scenario, p99(scenario.service, "route"), "route")
    )
    assert by_route[culprit] > 0.6 * magnitude  # bucket interpolation overstates the rise
    assert_unchanged(by_route, set(ROUTES) - {culprit})
    rolled = set(scenario.affected["instance"].split(","))
    info = f'model_info{{service="{scenario.service}",model_version="2.4.0"}}'
    # 2.4.0 is there three minutes before onset, and only on the rolled-out instances
    early = scenario.onset - timedelta(minutes=2)
    assert {r["metric"]["instance"] for r in loaded.server.query(info, early)} == rolled
    before_rollout = scenario.onset - timedelta(minutes=4)
    assert loaded.server.query(info, before_rollout) == []


def test_a_deploy_shows_in_build_info_and_restarts_the_instance(tmp_path) -> None:
    """build_info{version} follows fleet.deploy(), apart from the model's model_info."""
    from workbooks.synthetic.scenarios.families import BUILD_INFO, START_TIME
    from workbooks.synthetic.scenarios.fleet import NEW_BUILD, OLD_BUILD, Fleet

    scenario = make_scenario("high-latency", "none", seed=3)
    fleet = Fleet(scenario)
    fleet.deploy(["api-1"], minutes_from_onset=-2)
    text = "\n".join(
        f"{prefix} {values[-1]}"
        for group in BUILD_INFO.series(fleet)
        for prefix, values in zip(group.prefixes, group.values, strict=True)
    )
    assert f'instance="api-1",version="{NEW_BUILD}"' in text
    assert f'instance="api-0",version="{OLD_BUILD}"' in text
    assert f'instance="api-1",version="{OLD_BUILD}"' in text  # before the deploy
    assert fleet.restarted_at("api-1") == fleet.grid.onset - 120
    assert fleet.restarted_at("api-0") is None
    starts = next(g for g in START_TIME.series(fleet) if 'instance="api-1"' in g.prefixes[0])
    assert float(starts.values[0][-1]) == fleet.grid.onset - 120
