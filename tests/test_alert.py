"""Alertmanager webhook payloads (v4): a real grouped delivery parses, anything else is refused
with a BadAlertError whose ``field`` says where the payload is wrong."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from workbooks.core.alert import parse_alert_group, read_alert_group
from workbooks.core.errors import BadAlertError, WorkbooksError
from workbooks.synthetic.scenarios import make_scenario

DATA = Path(__file__).parent / "data"
MIXED_GROUP = DATA / "alertmanager_mixed_group.json"
DEMO_ALERT = Path(__file__).resolve().parents[1] / "lib/workbooks/demo/high-latency/alert.json"


def mixed_payload() -> dict[str, Any]:
    return json.loads(MIXED_GROUP.read_text(encoding="utf-8"))


# --- a real delivery --------------------------------------------------------------------------


def test_a_grouped_delivery_with_mixed_alertnames_parses() -> None:
    group = read_alert_group(MIXED_GROUP)

    assert group.version == "4"
    assert group.status == "firing"
    assert group.receiver == "workbooks"
    assert group.group_key == '{}:{service="inference-api"}'
    assert group.group_labels == {"service": "inference-api"}
    assert group.external_url == "http://alertmanager.example:9093"
    assert [alert.name for alert in group.alerts] == [
        "HighLatency",
        "SlowInference",
        "HighMemoryUsage",
    ]
    assert {name: len(alerts) for name, alerts in group.by_alertname().items()} == {
        "HighLatency": 1,
        "SlowInference": 1,
        "HighMemoryUsage": 1,
    }
    latency = group.alerts[0]
    assert latency.labels["route"] == "/v1/vision"
    assert latency.annotations["summary"] == "High request latency on inference-api"
    assert latency.fingerprint == "2ef4d53f7bbadc35"
    assert latency.generator_url.startswith("http://prometheus.example/graph?")


def test_firing_alerts_have_no_end_and_the_resolved_one_keeps_its_end() -> None:
    group = read_alert_group(MIXED_GROUP)
    latency, slow, memory = group.alerts

    # Alertmanager's "0001-01-01T00:00:00Z" means "still firing": no end.
    assert latency.ends_at is None
    assert slow.ends_at is None
    assert memory.status == "resolved"
    assert memory.ends_at == datetime(2026, 11, 20, 14, 20, 15, 500000, tzinfo=UTC)
    assert [alert.name for alert in group.firing] == ["HighLatency", "SlowInference"]


def test_times_are_utc_whatever_offset_the_payload_uses() -> None:
    group = read_alert_group(MIXED_GROUP)
    latency, slow, memory = group.alerts

    # Nanoseconds (Go's RFC 3339) are cut to microseconds, not refused.
    assert latency.starts_at == datetime(2026, 11, 20, 14, 10, 0, 123456, tzinfo=UTC)
    # +02:00 is moved onto UTC, not kept as a local time.
    assert slow.starts_at == datetime(2026, 11, 20, 14, 5, 30, tzinfo=UTC)
    for alert in group.alerts:
        assert alert.starts_at.utcoffset() == timedelta(0)
    # The incident starts with the earliest alert of the group.
    assert group.starts_at == memory.starts_at == datetime(2026, 11, 20, 13, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-11-20T14:10:00Z", datetime(2026, 11, 20, 14, 10, tzinfo=UTC)),
        ("2026-11-20T09:10:00-05:00", datetime(2026, 11, 20, 14, 10, tzinfo=UTC)),
        ("2026-11-21T00:40:00+10:30", datetime(2026, 11, 20, 14, 10, tzinfo=UTC)),
        # No offset at all: read as UTC, never as the machine's local time.
        ("2026-11-20T14:10:00", datetime(2026, 11, 20, 14, 10, tzinfo=UTC)),
    ],
)
def test_start_time_in_any_offset_becomes_utc(written: str, expected: datetime) -> None:
    payload = mixed_payload()
    payload["alerts"][0]["startsAt"] = written

    alert = parse_alert_group(payload).alerts[0]

    assert alert.starts_at == expected
    assert alert.starts_at.utcoffset() == timedelta(0)


def test_severity_defaults_to_warning_when_the_alert_carries_none() -> None:
    group = read_alert_group(MIXED_GROUP)

    assert group.alerts[0].severity == "critical"
    assert "severity" not in group.alerts[1].labels
    assert group.alerts[1].severity == "warning"


def test_the_demo_alert_and_a_scenario_alert_parse() -> None:
    demo = read_alert_group(DEMO_ALERT)
    assert demo.alerts[0].name == "HighLatency"
    assert demo.alerts[0].ends_at is None

    scenario = make_scenario("high-memory", "leak", onset=datetime(2026, 11, 20, 14, 5, tzinfo=UTC))
    group = parse_alert_group(json.dumps(scenario.alert_payload()))
    assert group.alerts[0].name == "HighMemoryUsage"
    assert group.alerts[0].starts_at == scenario.alert_starts_at


def test_to_payload_parses_back_to_the_same_group() -> None:
    group = read_alert_group(MIXED_GROUP)

    payload = group.to_payload()

    assert json.loads(json.dumps(payload)) == payload
    assert payload["groupKey"] == group.group_key
    assert payload["alerts"][1]["startsAt"].startswith("2026-11-20T14:05:30")
    assert parse_alert_group(payload) == group


@pytest.mark.parametrize("kind", ["str", "bytes", "dict"])
def test_payload_may_be_text_bytes_or_a_mapping(kind: str) -> None:
    text = MIXED_GROUP.read_text(encoding="utf-8")
    payload: str | bytes | dict[str, Any] = {
        "str": text,
        "bytes": text.encode("utf-8"),
        "dict": json.loads(text),
    }[kind]

    assert parse_alert_group(payload) == read_alert_group(MIXED_GROUP)


# --- reading ----------------------------------------------------------------------------------


def test_read_from_a_path_given_as_text_or_path_or_an_open_file() -> None:
    expected = read_alert_group(MIXED_GROUP)

    assert read_alert_group(str(MIXED_GROUP)) == expected
    assert read_alert_group(io.StringIO(MIXED_GROUP.read_text(encoding="utf-8"))) == expected
    with MIXED_GROUP.open(encoding="utf-8") as stream:
        assert read_alert_group(stream) == expected


def test_a_missing_file_is_a_bad_alert_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"

    with pytest.raises(BadAlertError, match=r"cannot read the alert file .*nope\.json"):
        read_alert_group(missing)


def test_a_bad_file_is_refused_like_a_bad_payload(tmp_path: Path) -> None:
    path = tmp_path / "alert.json"
    path.write_text('{"version": "4", "alerts": [', encoding="utf-8")

    with pytest.raises(BadAlertError, match="not valid JSON"):
        read_alert_group(path)


# --- refused payloads -------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(_drop("version"), "version", id="no-version"),
        pytest.param(_set("version", "3"), "version", id="version-3"),
        pytest.param(_set("version", 4), "version", id="version-as-number"),
        pytest.param(_drop("groupKey"), "groupKey", id="no-group-key"),
        pytest.param(_set("status", "pending"), "status", id="bad-group-status"),
        pytest.param(_set("alerts", []), "alerts", id="empty-alerts"),
        pytest.param(_drop("alerts"), "alerts", id="no-alerts"),
        pytest.param(_set("alerts", {}), "alerts", id="alerts-not-a-list"),
        pytest.param(_drop("alerts.0.startsAt"), "alerts[0].startsAt", id="no-start"),
        pytest.param(_set("alerts.0.startsAt", "yesterday"), "alerts[0].startsAt", id="bad-start"),
        pytest.param(
            _set("alerts.0.startsAt", "0001-01-01T00:00:00Z"),
            "alerts[0].startsAt",
            id="zero-start",
        ),
        pytest.param(_set("alerts.2.endsAt", "soon"), "alerts[2].endsAt", id="bad-end"),
        pytest.param(_set("alerts.1.status", "pending"), "alerts[1].status", id="bad-status"),
        pytest.param(_drop("alerts.1.labels.alertname"), "alerts[1].labels", id="no-alertname"),
        pytest.param(_set("alerts.0.labels", None), "alerts[0].labels", id="labels-null"),
        pytest.param(
            _set("alerts.0.labels.replicas", 3), "alerts[0].labels.replicas", id="label-number"
        ),
    ],
)
def test_a_bad_field_is_named(change: Callable[[dict[str, Any]], None], field: str) -> None:
    payload = copy.deepcopy(mixed_payload())
    change(payload)

    with pytest.raises(BadAlertError) as caught:
        parse_alert_group(payload)

    assert caught.value.field == field
    assert field in str(caught.value)
    assert isinstance(caught.value, WorkbooksError)


def test_an_unsupported_version_says_which_version_is_read() -> None:
    payload = mixed_payload()
    payload["version"] = "3"

    with pytest.raises(BadAlertError, match=r"unsupported webhook version '3'.*\"4\""):
        parse_alert_group(payload)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("{", id="truncated"),
        pytest.param("alertname=HighLatency", id="not-json"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    ],
)
def test_text_that_is_not_json_is_a_bad_alert_without_a_field(text: str | bytes) -> None:
    with pytest.raises(BadAlertError, match="not valid JSON") as caught:
        parse_alert_group(text)

    assert caught.value.field is None


@pytest.mark.parametrize("text", ["[]", "null", '"HighLatency"', "42"])
def test_json_that_is_not_an_object_is_a_bad_alert(text: str) -> None:
    with pytest.raises(BadAlertError, match="must be a JSON object") as caught:
        parse_alert_group(text)

    assert caught.value.field is None


def test_parsed_alerts_cannot_be_changed_afterwards() -> None:
    group = read_alert_group(MIXED_GROUP)

    with pytest.raises(ValueError, match="frozen"):
        group.alerts[0].status = "resolved"  # type: ignore[misc]
