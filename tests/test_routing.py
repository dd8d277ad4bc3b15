"""Routing: the shipped runbooks describe themselves, alerts go to the runbook their label,
runbook_url, the config's rules or their alertname names (in that order), and a runbook's
content hash follows its file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from workbooks.core.alert import AlertGroup, parse_alert_group
from workbooks.core.config import Config, RoutingRule
from workbooks.core.errors import ConfigError, UnknownRunbookError
from workbooks.running.routing import (
    GROUPS,
    Runbook,
    choose_runbook,
    configured_runbooks,
    get_runbook,
    load_runbooks,
    read_runbook,
    route,
    runbook_id_in_url,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEMO = ROOT / "lib" / "workbooks" / "demo"
MIXED_GROUP = Path(__file__).parent / "data" / "alertmanager_mixed_group.json"

# The runbook index: what the team's alert rules fire, and the runbook each must open (the
# alertnames the community's alert collections use for the same condition included).
INDEX = {
    "service-down": (
        "service",
        "ServiceDown TargetDown InstanceDown EndpointDown ProbeFailed KubePodCrashLooping",
    ),
    "high-error-rate": ("service", "HighErrorRate ErrorBudgetBurn SLOBurnRateHigh High5xxRate"),
    "high-latency": ("service", "HighLatency HighLatencyP99 SlowInference"),
    "model-load-failure": ("model", "ModelLoadFailure ModelLoadFailed ModelNotReady"),
    "accuracy-drop": ("model", "ModelAccuracyDrop AccuracyDrop EvalAccuracyLow"),
    "quantization-issues": ("model", "QuantizationIssue QuantizedAccuracyDrop QuantizationDrift"),
    "high-memory": ("infrastructure", "HighMemoryUsage MemoryNearLimit ContainerOOMKilled"),
    "high-cpu": ("infrastructure", "HighCpuUsage HostHighCpuLoad CPUThrottlingHigh NodeCPUHigh"),
    "low-disk-space": (
        "infrastructure",
        "LowDiskSpace HostOutOfDiskSpace HostOutOfInodes NodeFilesystemSpaceFillingUp "
        "NodeFilesystemAlmostOutOfSpace NodeFilesystemFilesFillingUp HostDiskWillFillIn24Hours",
    ),
    "database-issues": (
        "infrastructure",
        "DatabaseIssue PostgresqlDown PostgresqlTooManyConnections PostgresqlDeadLocks "
        "PostgresqlSlowQueries PostgresqlReplicationLag DatabaseConnectionsHigh",
    ),
    "unauthorized-access": (
        "security",
        "UnauthorizedAccess HighAuthFailureRate AuthFailureSpike SuspiciousLogin",
    ),
    "anomalous-traffic": ("security", "AnomalousTraffic TrafficSpike TrafficDrop UnusualTraffic"),
    "mobile-export-failure": ("mobile", "MobileExportFailure MobileExportFailed ModelExportFailed"),
    "android-deployment": (
        "mobile",
        "AndroidCrashRateHigh AndroidDeploymentIssue AndroidOnDeviceLatencyHigh",
    ),
    "ios-deployment": ("mobile", "IOSCrashRateHigh IOSDeploymentIssue IOSOnDeviceLatencyHigh"),
}
SHIPPED = sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
EXPECTED_ROUTES = {
    alertname: runbook_id for runbook_id in SHIPPED for alertname in INDEX[runbook_id][1].split()
}
# Known to the team's rules but to no runbook of the index.
UNHANDLED = "CertExpiring"


@pytest.fixture(scope="module")
def runbooks() -> dict[str, Runbook]:
    return load_runbooks(NOTEBOOKS)


def alert(
    name: str, *, status: str = "firing", annotations: dict | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "service": "inference-api", **labels},
        "annotations": annotations or {},
        "startsAt": "2026-11-20T14:10:00Z",
        "endsAt": "2026-11-20T14:40:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": f"fp-{name}",
    }


def group(*alerts: dict[str, Any]) -> AlertGroup:
    return parse_alert_group(
        {
            "version": "4",
            "status": "firing",
            "receiver": "workbooks",
            "groupKey": '{}:{service="inference-api"}',
            "alerts": list(alerts),
        }
    )


def routed(routes: list[Any]) -> dict[str, list[str]]:
    return {r.runbook.id: [a.name for a in r.alerts] for r in routes}


# --- the shipped runbooks ----------------------------------------------------------------------


def test_the_shipped_runbooks_describe_themselves(runbooks: dict[str, Runbook]) -> None:
    assert set(runbooks) == set(INDEX)  # the whole index, no more
    for runbook_id, runbook in runbooks.items():
        assert runbook.path == NOTEBOOKS / f"{runbook_id}.ipynb"  # file name = runbook id
        assert runbook.title
        assert runbook.summary
        assert runbook.alerts
        assert runbook.group in GROUPS
        assert runbook.group == INDEX[runbook_id][0]


def test_no_alertname_is_claimed_by_two_runbooks(runbooks: dict[str, Runbook]) -> None:
    claimed = [name for runbook in runbooks.values() for name in runbook.alerts]

    assert len(claimed) == len(set(claimed))
    assert set(claimed) == set(EXPECTED_ROUTES)


@pytest.mark.parametrize(("alertname", "runbook_id"), sorted(EXPECTED_ROUTES.items()))
def test_an_alert_goes_to_the_runbook_for_its_alertname(
    runbooks: dict[str, Runbook], alertname: str, runbook_id: str
) -> None:
    routes = route(group(alert(alertname)), runbooks)

    assert routed(routes) == {runbook_id: [alertname]}


@pytest.mark.parametrize("runbook_id", SHIPPED)
def test_each_demo_alert_routes_to_its_own_runbook(
    runbooks: dict[str, Runbook], runbook_id: str
) -> None:
    payload = (DEMO / runbook_id / "alert.json").read_text(encoding="utf-8")

    routes = route(parse_alert_group(payload), runbooks)

    assert [r.runbook.id for r in routes] == [runbook_id]


def test_a_group_with_several_alertnames_gives_one_route_per_runbook(
    runbooks: dict[str, Runbook],
) -> None:
    mixed = group(
        alert("HighLatency", route="/v1/vision"),
        alert("HighMemoryUsage", instance="api-1"),
        alert("SlowInference", status="resolved"),
        alert("HighLatency", route="/v1/chat"),
    )

    routes = route(mixed, runbooks)

    assert routed(routes) == {
        "high-latency": ["HighLatency", "HighLatency", "SlowInference"],
        "high-memory": ["HighMemoryUsage"],
    }
    # Every alert goes somewhere, exactly once.
    assert sorted(a.fingerprint for r in routes for a in r.alerts) == sorted(
        a.fingerprint for a in mixed.alerts
    )


def test_the_recorded_mixed_delivery_routes_to_two_runbooks(runbooks: dict[str, Runbook]) -> None:
    routes = route(parse_alert_group(MIXED_GROUP.read_text(encoding="utf-8")), runbooks)

    assert routed(routes) == {
        "high-latency": ["HighLatency", "SlowInference"],
        "high-memory": ["HighMemoryUsage"],
    }


def test_an_explicit_runbook_takes_every_alert(runbooks: dict[str, Runbook]) -> None:
    mixed = group(alert("HighLatency"), alert("DiskAlmostFull"), alert("ModelAccuracyDrop"))

    routes = route(mixed, runbooks, runbook_id="high-memory")

    assert routed(routes) == {"high-memory": ["HighLatency", "DiskAlmostFull", "ModelAccuracyDrop"]}
    assert routes[0].runbook is runbooks["high-memory"]


def test_an_unknown_explicit_runbook_lists_the_known_ones(runbooks: dict[str, Runbook]) -> None:
    with pytest.raises(
        UnknownRunbookError,
        match=r"runbook 'no-such-runbook' not found; known: accuracy-drop, .*high-latency, ",
    ):
        route(group(alert("HighLatency")), runbooks, runbook_id="no-such-runbook")


def test_an_unknown_alertname_lists_the_handled_alertnames(runbooks: dict[str, Runbook]) -> None:
    with pytest.raises(UnknownRunbookError) as caught:
        route(group(alert(UNHANDLED)), runbooks)

    message = str(caught.value)
    assert f"no runbook handles alertname {UNHANDLED}" in message
    handled = message.split("handled: ", 1)[1].split(". ", 1)[0].split(", ")
    assert handled == sorted(EXPECTED_ROUTES)
    assert "workbook run RUNBOOK" in message  # the way out


def test_one_unhandled_alertname_refuses_the_whole_group(runbooks: dict[str, Runbook]) -> None:
    mixed = group(alert("HighLatency"), alert("NoSuchAlert"), alert(UNHANDLED))

    with pytest.raises(UnknownRunbookError, match=f"alertname {UNHANDLED}, NoSuchAlert;"):
        route(mixed, runbooks)


def test_get_runbook_with_no_runbooks_says_none() -> None:
    with pytest.raises(UnknownRunbookError, match=r"known: \(none\)"):
        get_runbook({}, "high-latency")


# --- reading runbooks --------------------------------------------------------------------------


def test_a_missing_runbook_folder_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(UnknownRunbookError, match="WORKBOOKS_NOTEBOOKS"):
        load_runbooks(tmp_path / "no-such-folder")


def test_an_empty_folder_has_no_runbooks(tmp_path: Path) -> None:
    assert load_runbooks(tmp_path) == {}


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="no-workbooks-metadata"),
        pytest.param({"workbooks": {"runbook": "x", "title": "X"}}, id="incomplete"),
    ],
)
def test_a_notebook_that_is_not_a_runbook_is_named(tmp_path: Path, metadata: dict) -> None:
    path = tmp_path / "scratch.ipynb"
    path.write_text(
        json.dumps({"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}),
        encoding="utf-8",
    )

    with pytest.raises(UnknownRunbookError, match=r"scratch\.ipynb is not a runbook notebook"):
        read_runbook(path)


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json", encoding="utf-8")

    with pytest.raises(UnknownRunbookError, match=r"broken\.ipynb is not a runbook notebook"):
        read_runbook(path)


def test_alerts_written_as_one_string_are_refused(tmp_path: Path) -> None:
    notebook = json.loads((NOTEBOOKS / "high-latency.ipynb").read_text(encoding="utf-8"))
    notebook["metadata"]["workbooks"]["alerts"] = "HighLatency"
    path = tmp_path / "high-latency.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")

    with pytest.raises(UnknownRunbookError):
        read_runbook(path)


# --- which version ran -------------------------------------------------------------------------


def test_content_hash_is_the_start_of_the_files_sha256(runbooks: dict[str, Runbook]) -> None:
    for runbook in runbooks.values():
        digest = hashlib.sha256(runbook.path.read_bytes()).hexdigest()
        assert runbook.content_hash == digest[:12]
    assert len({runbook.content_hash for runbook in runbooks.values()}) == len(runbooks)


def test_content_hash_changes_when_the_notebook_changes(tmp_path: Path) -> None:
    copy = tmp_path / "high-latency.ipynb"
    shutil.copyfile(NOTEBOOKS / "high-latency.ipynb", copy)
    runbook = read_runbook(copy)
    before = runbook.content_hash
    assert read_runbook(copy).content_hash == before  # stable while unchanged

    notebook = json.loads(copy.read_text(encoding="utf-8"))
    notebook["cells"].append(
        {"cell_type": "markdown", "id": "edit-1", "metadata": {}, "source": "Also check the CDN."}
    )
    copy.write_text(json.dumps(notebook, indent=1), encoding="utf-8")

    assert read_runbook(copy).content_hash != before
    assert read_runbook(copy).id == "high-latency"


def test_a_copied_folder_routes_like_the_original(tmp_path: Path) -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        shutil.copyfile(path, tmp_path / path.name)

    copied = load_runbooks(tmp_path)

    assert routed(route(group(alert("MemoryNearLimit")), copied)) == {
        "high-memory": ["MemoryNearLimit"]
    }
    assert (
        copied["high-memory"].content_hash == load_runbooks(NOTEBOOKS)["high-memory"].content_hash
    )


# --- a team's own alerts: label, runbook_url, config rules ----------------------------------------

TEAM_RULES = [
    RoutingRule(match={"alertname": "MyP99"}, runbook="high-latency"),
    RoutingRule(match={"team": "db", "severity": "critical"}, runbook="high-memory"),
]


@pytest.fixture(scope="module")
def team_runbooks() -> dict[str, Runbook]:
    return load_runbooks(NOTEBOOKS, routing=TEAM_RULES)


@pytest.mark.parametrize(
    ("url", "runbook_id"),
    [
        ("https://wiki.example/runbooks/high-latency", "high-latency"),
        ("https://wiki.example/runbooks/high-latency.md", "high-latency"),
        ("https://git.example/ops/notebooks/high-memory.ipynb?plain=1#steps", "high-memory"),
        ("https://docs.example/accuracy-drop.html", "accuracy-drop"),
        ("https://docs.example/runbooks/accuracy-drop/", "accuracy-drop"),
        ("accuracy-drop", "accuracy-drop"),
    ],
)
def test_runbook_id_in_url_is_the_last_segment_without_the_page_suffix(
    url: str, runbook_id: str
) -> None:
    assert runbook_id_in_url(url) == runbook_id


@pytest.mark.parametrize(
    ("labels", "annotations", "runbook_id", "why"),
    [
        pytest.param({"runbook": "accuracy-drop"}, {}, "accuracy-drop", "label", id="label"),
        pytest.param(
            {},
            {"runbook_url": "https://wiki.example/runbooks/high-memory.md"},
            "high-memory",
            "annotation runbook_url",
            id="runbook_url",
        ),
        pytest.param(
            {"runbook": "accuracy-drop"},
            {"runbook_url": "https://wiki.example/runbooks/high-memory.md"},
            "accuracy-drop",
            "label",
            id="label-beats-runbook_url",
        ),
        pytest.param(
            {"team": "db", "severity": "critical"},
            {"runbook_url": "https://wiki.example/runbooks/accuracy-drop"},
            "accuracy-drop",
            "annotation",
            id="runbook_url-beats-config",
        ),
        pytest.param(
            {"team": "db", "severity": "critical"},
            {"runbook_url": "https://wiki.example/HighLatency-playbook"},
            "high-memory",
            "routing rule 2 (team=db, severity=critical)",
            id="a-wiki-runbook_url-falls-through-to-config",
        ),
        pytest.param(
            {"team": "db", "severity": "warning"}, {}, "high-latency", "alertname", id="metadata"
        ),
    ],
)
def test_precedence_label_then_runbook_url_then_config_then_alertname(
    team_runbooks: dict[str, Runbook],
    labels: dict[str, str],
    annotations: dict[str, str],
    runbook_id: str,
    why: str,
) -> None:
    # HighLatency is in high-latency's metadata: the fallback when nothing else names a runbook
    [only] = group(alert("HighLatency", annotations=annotations, **labels)).alerts

    choice = choose_runbook(only, team_runbooks)

    assert choice is not None and choice.runbook.id == runbook_id
    assert why in choice.reason


def test_config_rules_route_a_team_alertname_and_labels(team_runbooks: dict[str, Runbook]) -> None:
    mixed = group(
        alert("MyP99"),
        alert("PostgresConnectionsHigh", team="db", severity="critical"),
        alert("PostgresConnectionsHigh", team="db", severity="warning", runbook="high-memory"),
    )

    assert routed(route(mixed, team_runbooks)) == {
        "high-latency": ["MyP99"],
        "high-memory": ["PostgresConnectionsHigh", "PostgresConnectionsHigh"],
    }


def test_without_the_rules_the_team_alert_is_refused_with_the_ways_to_route_it(
    runbooks: dict[str, Runbook],
) -> None:
    with pytest.raises(UnknownRunbookError) as caught:
        route(group(alert("MyP99")), runbooks)

    message = str(caught.value)
    assert "runbook label" in message and "runbook_url" in message and "'routing:'" in message


def test_a_runbook_label_naming_no_runbook_is_an_error(runbooks: dict[str, Runbook]) -> None:
    with pytest.raises(UnknownRunbookError, match=r"runbook='no-such-runbook'.*known: accuracy"):
        route(group(alert("HighLatency", runbook="no-such-runbook")), runbooks)


def test_a_rule_for_an_unknown_runbook_is_refused_at_load(tmp_path: Path) -> None:
    config = tmp_path / "workbooks.yaml"
    config.write_text(
        f"notebooks: {NOTEBOOKS}\n"
        "routing:\n"
        "  - {match: {alertname: MyP99}, runbook: high-latency}\n"
        "  - {match: {team: db, severity: critical}, runbook: no-such-runbook}\n"
    )
    from workbooks.core.config import load_config

    loaded = load_config(config, env={})
    assert loaded.routing[1].match == {"team": "db", "severity": "critical"}

    with pytest.raises(ConfigError) as caught:
        configured_runbooks(loaded)

    message = str(caught.value)
    assert "routing rule 2 (team=db, severity=critical)" in message
    assert "'no-such-runbook'" in message and "known: accuracy-drop, " in message
    assert "'routing:' in the config file" in message


def test_configured_runbooks_carry_the_config_rules() -> None:
    config = Config.model_validate(
        {
            "notebooks": str(NOTEBOOKS),
            "routing": [{"match": {"alertname": "MyP99"}, "runbook": "high-latency"}],
        }
    )

    found = configured_runbooks(config)

    assert set(found) == set(SHIPPED)
    assert [rule.describe() for rule in found.rules_for("high-latency")] == ["alertname=MyP99"]
    assert found.rules_for("high-memory") == []
    assert routed(route(group(alert("MyP99")), found)) == {"high-latency": ["MyP99"]}
