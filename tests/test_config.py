"""Configuration: the file, the WORKBOOKS_* environment on top, errors that name the setting,
a pinned "now", and secrets that never show in a printed config."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workbooks.core.config import PrometheusSettings, load_config, now
from workbooks.core.errors import ConfigError
from workbooks.core.paths import PROJECT_ROOT

TOKEN = "tok-3f9a1c-SECRET"
PASSWORD = "pw-hunter2-SECRET"
HEADER_SECRET = "hdr-7781-SECRET"


@pytest.fixture(autouse=True)
def _in_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./workbooks.yaml unless a test writes one."""
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults, file, environment --------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    config = load_config(env={})

    assert config.prometheus.url is None
    assert config.prometheus.timeout_seconds == 10.0
    assert config.prometheus.verify_tls is True
    assert config.prometheus.headers == {}
    assert config.archive_dir == Path("archive")
    assert config.notebooks_dir == PROJECT_ROOT / "notebooks"
    assert (config.notebooks_dir / "high-latency.ipynb").is_file()
    assert config.now is None
    # The runbook index's escalation chain is the default.
    assert config.escalation.primary == "ML Engineering Team"
    assert config.escalation.secondary == "DevOps Team"
    assert config.escalation.escalation == "Engineering Manager"


def test_the_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "team.yaml",
        "prometheus:\n"
        "  url: http://prom.internal:9090\n"
        "  timeout_seconds: 4.5\n"
        "  headers: {X-Scope-OrgID: team-a}\n"
        "archive: /srv/workbooks\n"
        "escalation:\n"
        "  slack: '#team-a-oncall'\n",
    )

    config = load_config(path, env={})

    assert config.prometheus.url == "http://prom.internal:9090"
    assert config.prometheus.timeout_seconds == 4.5
    assert config.prometheus.headers == {"X-Scope-OrgID": "team-a"}
    assert config.archive_dir == Path("/srv/workbooks")
    assert config.escalation.slack == "#team-a-oncall"
    assert config.escalation.primary == "ML Engineering Team"  # the rest stays default


def test_the_environment_wins_over_the_file_setting_by_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path / "team.yaml",
        "prometheus:\n  url: http://from-file:9090\n  timeout_seconds: 4\narchive: file-archive\n",
    )

    config = load_config(
        path,
        env={
            "WORKBOOKS_PROMETHEUS_URL": "http://from-env:9090",
            "WORKBOOKS_ARCHIVE": "env-archive",
            "WORKBOOKS_NOTEBOOKS": "/srv/runbooks",
        },
    )

    assert config.prometheus.url == "http://from-env:9090"
    assert config.prometheus.timeout_seconds == 4.0  # the file's, not the default
    assert config.archive_dir == Path("env-archive")
    assert config.notebooks_dir == Path("/srv/runbooks")


def test_an_empty_environment_variable_does_not_override(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "prometheus:\n  url: http://from-file:9090\n")

    config = load_config(path, env={"WORKBOOKS_PROMETHEUS_URL": ""})

    assert config.prometheus.url == "http://from-file:9090"


def test_every_prometheus_environment_variable(tmp_path: Path) -> None:
    config = load_config(
        env={
            "WORKBOOKS_PROMETHEUS_URL": "https://prom.example",
            "WORKBOOKS_PROMETHEUS_TOKEN": TOKEN,
            "WORKBOOKS_PROMETHEUS_USERNAME": "alice",
            "WORKBOOKS_PROMETHEUS_PASSWORD": PASSWORD,
            "WORKBOOKS_PROMETHEUS_HEADERS": json.dumps(
                {"X-Scope-OrgID": "team-a", "X-Key": HEADER_SECRET}
            ),
            "WORKBOOKS_PROMETHEUS_CA_BUNDLE": "/etc/ssl/team-ca.pem",
            "WORKBOOKS_PROMETHEUS_VERIFY": "true",
            "WORKBOOKS_PROMETHEUS_TIMEOUT": "2.5",
        }
    )

    settings = config.prometheus
    assert settings.url == "https://prom.example"
    assert settings.bearer_token == TOKEN
    assert (settings.username, settings.password) == ("alice", PASSWORD)
    assert settings.headers == {"X-Scope-OrgID": "team-a", "X-Key": HEADER_SECRET}
    assert settings.ca_bundle == "/etc/ssl/team-ca.pem"
    assert settings.verify_tls is True
    assert settings.timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("written", "verify"),
    [
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("true", True),
        ("1", True),
        ("yes", True),
    ],
)
def test_tls_verification_can_be_turned_off(written: str, verify: bool) -> None:
    config = load_config(env={"WORKBOOKS_PROMETHEUS_VERIFY": written})

    assert config.prometheus.verify_tls is verify


def test_the_config_file_comes_from_workbooks_config(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.yaml", "archive: from-env-named-file\n")

    config = load_config(env={"WORKBOOKS_CONFIG": str(path)})

    assert config.archive == "from-env-named-file"


def test_an_explicit_path_beats_workbooks_config(tmp_path: Path) -> None:
    named = write(tmp_path / "named.yaml", "archive: named\n")
    explicit = write(tmp_path / "explicit.yaml", "archive: explicit\n")

    config = load_config(explicit, env={"WORKBOOKS_CONFIG": str(named)})

    assert config.archive == "explicit"


def test_workbooks_yaml_in_the_current_folder_is_used(tmp_path: Path) -> None:
    write(tmp_path / "workbooks.yaml", "archive: local\n")

    assert load_config(env={}).archive == "local"


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.yaml", "# nothing set yet\n")

    assert load_config(path, env={}) == load_config(env={})


# --- errors that name the setting -------------------------------------------------------------


def test_headers_must_be_json() -> None:
    with pytest.raises(ConfigError, match="WORKBOOKS_PROMETHEUS_HEADERS must be a JSON object"):
        load_config(env={"WORKBOOKS_PROMETHEUS_HEADERS": "X-Scope-OrgID: team-a"})


@pytest.mark.parametrize("headers", ['["X-Scope-OrgID"]', '{"X-Retries": 3}'])
def test_headers_must_be_an_object_of_strings(headers: str) -> None:
    with pytest.raises(ConfigError, match=r"bad value in WORKBOOKS_PROMETHEUS_HEADERS"):
        load_config(env={"WORKBOOKS_PROMETHEUS_HEADERS": headers})


def test_a_bad_environment_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"bad value in WORKBOOKS_PROMETHEUS_TIMEOUT"):
        load_config(env={"WORKBOOKS_PROMETHEUS_TIMEOUT": "ten"})


def test_a_bad_environment_value_is_not_blamed_on_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "prometheus:\n  url: http://prom:9090\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"WORKBOOKS_PROMETHEUS_TIMEOUT": "ten"})

    assert "config file" not in str(caught.value)
    assert "environment" in str(caught.value) or "WORKBOOKS_PROMETHEUS_TIMEOUT" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("prometheus:\n  timeout_seconds: 0\n", "prometheus.timeout_seconds"),
        ("prometheus:\n  timeout_seconds: -3\n", "prometheus.timeout_seconds"),
        ("prometheus:\n  max_points: 20000\n", "prometheus.max_points"),
        ("prometheus:\n  verify_tls: maybe\n", "prometheus.verify_tls"),
        ("prometheus:\n  urll: http://typo:9090\n", "prometheus.urll"),
        ("escalation:\n  escalate_after_minutes: soon\n", "escalation.escalate_after_minutes"),
        ("run_timeout_seconds: 0\n", "run_timeout_seconds"),
        ("queries: [request_rate]\n", "queries"),
        ("now: yesterday\n", "now"),
        ("prometheus: http://prom:9090\n", "prometheus"),
    ],
)
def test_a_bad_file_value_names_the_setting_and_the_file(
    tmp_path: Path, text: str, setting: str
) -> None:
    path = write(tmp_path / "team.yaml", text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    message = str(caught.value)
    assert f"bad setting {setting}" in message
    assert str(path) in message


def test_bad_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "prometheus:\n  url: [unclosed\n")

    with pytest.raises(ConfigError, match=r"team\.yaml is not valid YAML"):
        load_config(path, env={})


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "- prometheus\n- archive\n")

    with pytest.raises(ConfigError, match="must hold a mapping at the top"):
        load_config(path, env={})


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the config file .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml", env={})


def test_workbooks_config_naming_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(env={"WORKBOOKS_CONFIG": str(tmp_path / "gone.yaml")})


# --- now ---------------------------------------------------------------------------------------


def test_workbooks_now_pins_now() -> None:
    config = load_config(env={"WORKBOOKS_NOW": "2026-11-20T14:45:00Z"})

    assert now(config) == datetime(2026, 11, 20, 14, 45, tzinfo=UTC)
    assert now(config).utcoffset() == timedelta(0)


def test_a_pinned_now_without_offset_is_utc() -> None:
    config = load_config(env={"WORKBOOKS_NOW": "2026-11-20T14:45:00"})

    assert now(config) == datetime(2026, 11, 20, 14, 45, tzinfo=UTC)


def test_a_pinned_now_with_an_offset_is_the_same_instant() -> None:
    config = load_config(env={"WORKBOOKS_NOW": "2026-11-20T16:45:00+02:00"})

    assert now(config) == datetime(2026, 11, 20, 14, 45, tzinfo=UTC)


def test_now_is_the_clock_when_not_pinned() -> None:
    before = datetime.now(UTC)
    moment = now(load_config(env={}))
    after = datetime.now(UTC)

    assert before <= moment <= after


def test_a_bad_workbooks_now_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="bad value in WORKBOOKS_NOW"):
        load_config(env={"WORKBOOKS_NOW": "yesterday"})


def test_workbooks_now_pins_now_for_a_fresh_process(tmp_path: Path) -> None:
    """What a notebook kernel sees: the variable set before the process starts."""
    completed = subprocess.run(
        [sys.executable, "-c", "from workbooks.core.config import now; print(now().isoformat())"],
        env={"WORKBOOKS_NOW": "2026-11-20T14:45:00Z", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "2026-11-20T14:45:00+00:00"


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_do_not_show_when_settings_are_printed() -> None:
    config = load_config(
        env={
            "WORKBOOKS_PROMETHEUS_URL": "https://prom.example",
            "WORKBOOKS_PROMETHEUS_TOKEN": TOKEN,
            "WORKBOOKS_PROMETHEUS_USERNAME": "alice",
            "WORKBOOKS_PROMETHEUS_PASSWORD": PASSWORD,
            "WORKBOOKS_PROMETHEUS_HEADERS": json.dumps({"X-Key": HEADER_SECRET}),
        }
    )

    for text in (repr(config), str(config), repr(config.prometheus), str(config.prometheus)):
        assert TOKEN not in text
        assert PASSWORD not in text
        assert HEADER_SECRET not in text
        assert "https://prom.example" in text  # the printout is still useful


def test_secrets_from_the_file_do_not_show_either(tmp_path: Path) -> None:
    path = write(
        tmp_path / "team.yaml",
        f"prometheus:\n  bearer_token: {TOKEN}\n  password: {PASSWORD}\n  username: bob\n",
    )

    settings = load_config(path, env={}).prometheus

    assert settings.bearer_token == TOKEN
    assert TOKEN not in repr(settings)
    assert PASSWORD not in repr(settings)


def test_a_config_error_does_not_repeat_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            env={
                "WORKBOOKS_PROMETHEUS_TOKEN": TOKEN,
                "WORKBOOKS_PROMETHEUS_PASSWORD": PASSWORD,
                "WORKBOOKS_PROMETHEUS_TIMEOUT": "never",
            }
        )

    assert TOKEN not in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_settings_are_frozen_and_refuse_unknown_names() -> None:
    settings = PrometheusSettings(url="http://prom:9090", username="u", password="p")

    with pytest.raises(ValueError, match="frozen"):
        settings.url = "http://other:9090"  # type: ignore[misc]
    with pytest.raises(ValueError, match="token"):
        PrometheusSettings(token=TOKEN)  # type: ignore[call-arg]


# --- where the file is: one rule for the CLI, the runner and the kernels ------------------------


def test_find_config_file_follows_the_same_order_and_is_absolute(tmp_path: Path) -> None:
    from workbooks.core.config import find_config_file

    assert find_config_file(env={}) is None
    local = write(tmp_path / "workbooks.yaml", "archive: local\n")
    named = write(tmp_path / "named.yaml", "archive: named\n")

    assert find_config_file(env={}) == local
    assert find_config_file(env={"WORKBOOKS_CONFIG": "named.yaml"}) == named
    assert find_config_file("named.yaml", env={"WORKBOOKS_CONFIG": "x.yaml"}) == named
    assert find_config_file(env={"WORKBOOKS_CONFIG": ""}) == local  # empty: not set
    assert all(p.is_absolute() for p in (local, find_config_file(env={})))


# --- routing: a team's own alerts ---------------------------------------------------------------


def test_routing_rules_are_read_with_label_values_as_text(tmp_path: Path) -> None:
    write(
        tmp_path / "workbooks.yaml",
        "routing:\n"
        "  - match: {alertname: MyP99}\n"
        "    runbook: high-latency\n"
        "  - {match: {team: db, code: 500}, runbook: database-issues}\n",
    )

    rules = load_config(env={}).routing

    assert [rule.runbook for rule in rules] == ["high-latency", "database-issues"]
    assert rules[1].match == {"team": "db", "code": "500"}
    assert rules[1].matches({"team": "db", "code": "500", "alertname": "X"})
    assert not rules[1].matches({"team": "db"})
    assert rules[1].describe() == "team=db, code=500"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("routing: [{runbook: high-latency}]", "routing.0.match"),
        ("routing: [{match: {}, runbook: high-latency}]", "routing.0.match"),
        ("routing: [{match: {alertname: X}}]", "routing.0.runbook"),
        ("routing: [{match: {alertname: X}, runbook: x, when: always}]", "routing.0.when"),
        ("routing: {alertname: X}", "routing"),
    ],
)
def test_a_bad_routing_rule_names_where_it_is(tmp_path: Path, text: str, where: str) -> None:
    write(tmp_path / "workbooks.yaml", text + "\n")

    with pytest.raises(ConfigError, match=rf"bad setting {where}\b.*workbooks\.yaml"):
        load_config(env={})


def test_runbook_thresholds_are_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "workbooks.yaml"
    path.write_text(
        "runbooks:\n  high-latency:\n    thresholds:\n      latency_ratio_critical: 3\n"
    )

    config = load_config(path, env={})

    assert config.runbooks["high-latency"].thresholds == {"latency_ratio_critical": 3.0}


def test_a_runbook_block_with_a_misspelt_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "workbooks.yaml"
    path.write_text("runbooks:\n  high-latency:\n    treshold: {}\n")

    with pytest.raises(ConfigError, match=r"runbooks\.high-latency\.treshold"):
        load_config(path, env={})


def test_dependencies_per_service_are_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "workbooks.yaml"
    path.write_text("dependencies:\n  inference-api: [model-store, feature-db]\n")

    config = load_config(path, env={})

    assert config.dependencies == {"inference-api": ["model-store", "feature-db"]}


def test_dependencies_must_be_a_list_of_names(tmp_path: Path) -> None:
    path = tmp_path / "workbooks.yaml"
    path.write_text("dependencies:\n  inference-api: model-store\n")

    with pytest.raises(ConfigError, match=r"dependencies\.inference-api"):
        load_config(path, env={})


def test_slo_objectives_default_and_per_service(tmp_path: Path) -> None:
    assert load_config(env={}).slo.availability_for("inference-api") == 0.995
    path = write(
        tmp_path / "w.yaml", "slo:\n  availability: 0.99\n  services:\n    checkout: 0.999\n"
    )
    slo = load_config(path, env={}).slo
    assert slo.availability_for("checkout") == 0.999
    assert slo.availability_for("search") == 0.99


def test_an_slo_objective_of_100_percent_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", "slo:\n  services:\n    checkout: 1.0\n")
    with pytest.raises(ConfigError, match="slo"):
        load_config(path, env={})


# --- escalation per runbook group --------------------------------------------------------------


def test_a_group_block_overrides_only_the_keys_it_gives(tmp_path: Path) -> None:
    path = write(
        tmp_path / "team.yaml",
        "escalation:\n"
        "  primary: SRE on-call\n"
        "  slack: '#sre'\n"
        "  groups:\n"
        "    security:\n"
        "      {primary: Security on-call, slack: '#sec-incidents', pagerduty: sec-oncall}\n",
    )
    config = load_config(path, env={})

    security = config.escalation_for("security")
    assert (security.primary, security.slack, security.pagerduty) == (
        "Security on-call",
        "#sec-incidents",
        "sec-oncall",
    )
    # The keys the group does not give come from the default block, the team's and the built-in.
    assert security.secondary == "DevOps Team"
    assert security.email == "ml-team@company.com"
    assert security.escalate_after_minutes == 30
    assert security.groups == {}
    # A group without a block, and no group at all, get the default block.
    for other in ("service", None):
        contacts = config.escalation_for(other)
        assert (contacts.primary, contacts.slack) == ("SRE on-call", "#sre")
        assert contacts.pagerduty == "mobile-ml-oncall"


def test_an_unknown_group_in_the_escalation_block_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "escalation:\n  groups:\n    securty: {primary: x}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})

    message = str(raised.value)
    assert "escalation.groups" in message
    assert "securty" in message and "security" in message


def test_a_group_block_rejects_keys_the_default_block_does_not_have(tmp_path: Path) -> None:
    path = write(tmp_path / "team.yaml", "escalation:\n  groups:\n    security: {pager: x}\n")

    with pytest.raises(ConfigError, match=r"escalation\.groups\.security\.pager"):
        load_config(path, env={})
