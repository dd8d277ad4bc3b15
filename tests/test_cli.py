"""The ``workbook`` command, through click's runner and the installed script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from workbooks.archive.store import Archive
from workbooks.cli import main, parse_duration
from workbooks.core.errors import ConfigError

RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"


def alert_payload(name: str = "HighLatency") -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "workbooks",
        "groupKey": f'{{}}:{{alertname="{name}"}}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "service": "api", "severity": "critical"},
                "annotations": {"summary": "p99 latency is high"},
                "startsAt": "2026-11-28T14:05:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "3f9a2c1b",
            }
        ],
    }


def invoke(archive: Path, *args: str, input: str | None = None) -> Result:
    env = {"WORKBOOKS_NOTEBOOKS": str(RUNBOOKS), "WORKBOOKS_PROMETHEUS_URL": None}
    return CliRunner().invoke(main, ["--archive", str(archive), *args], input=input, env=env)


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """One successful run, archived through the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    alert = folder / "alert.json"
    alert.write_text(json.dumps(alert_payload()))
    evidence = folder / "evidence"
    evidence.mkdir()
    result = invoke(folder / "archive", "run", "--alert", str(alert), "--evidence", str(evidence))
    return folder / "archive", result


def test_every_command_has_help_with_an_example() -> None:
    commands = sorted(main.commands)
    assert {"run", "runbooks", "list", "show", "replay", "demo"} <= set(commands)
    for name in [None, *commands]:
        result = CliRunner().invoke(main, [name, "--help"] if name else ["--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output and "workbook " in result.output, name
    for name, command in main.commands.items():
        short = command.get_short_help_str(limit=45)
        assert short and not short.endswith("..."), name


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "workbooks"], [str(Path(sys.executable).parent / "workbook")]],
)
def test_installed_entry_points(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "show", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "Usage: workbook show" in result.stdout


def test_run_prints_what_ran_and_exits_0(archived: tuple[Path, Result]) -> None:
    _, result = archived
    assert result.exit_code == 0, result.output
    assert "tiny-latency for HighLatency" in result.stdout and "succeeded" in result.stdout
    assert "workbook.ipynb" in result.stdout
    assert result.stdout.index("p99 latency above baseline") < result.stdout.index("checked")


def test_every_json_names_a_run_the_same_way(tmp_path: Path) -> None:
    """list, show, run, replay and demo: one set of key names, incident_id and run_id among them."""
    archive = tmp_path / "archive"
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(alert_payload()))
    ran = invoke(archive, "run", "--alert", str(alert), "--evidence", str(tmp_path), "--json")
    assert ran.exit_code == 0, ran.output
    run = json.loads(ran.stdout)
    shown = json.loads(invoke(archive, "show", run["run_id"], "--json").stdout)
    replayed = json.loads(invoke(archive, "replay", run["incident_id"], "--json").stdout)
    listed = json.loads(invoke(archive, "list", "--json").stdout)
    demo = CliRunner().invoke(main, ["demo", "--archive", str(tmp_path / "demo"), "--json"])
    assert demo.exit_code == 0, demo.output
    demoed = json.loads(demo.stdout)

    assert set(run) == set(shown) == set(replayed) == set(demoed) == set(listed[0]) | {"findings"}
    for document in (run, shown, replayed, demoed, *listed):
        assert {"incident_id", "run_id", "runbook", "status", "started_at"} <= set(document)
        assert "incident" not in document and "run" not in document
    assert shown == run
    assert replayed["incident_id"] == run["incident_id"] != demoed["incident_id"]
    assert replayed["run_id"] != run["run_id"]
    assert {entry["run_id"] for entry in listed} == {run["run_id"], replayed["run_id"]}
    assert shown["findings"][0]["title"] == "p99 latency above baseline"
    assert demoed["runbook"] == "high-latency" and demoed["findings"]
    text = invoke(archive, "show", run["incident_id"])
    assert text.exit_code == 0 and "p99 latency above baseline" in text.stdout


def test_list_and_runbooks(archived: tuple[Path, Result]) -> None:
    archive, _ = archived
    listed = invoke(archive, "list", "--since", "7d", "--json")
    assert listed.exit_code == 0
    assert [run["runbook"] for run in json.loads(listed.stdout)] == ["tiny-latency"]
    table = invoke(archive, "list", "--runbook", "tiny-latency")
    assert table.exit_code == 0 and "critical: p99 latency above baseline" in table.stdout
    assert invoke(archive, "list", "--runbook", "nothing").stdout == ""
    runbooks = invoke(archive, "runbooks", "--json")
    assert runbooks.exit_code == 0
    assert {r["id"] for r in json.loads(runbooks.stdout)} == {
        "tiny-latency",
        "tiny-broken",
        "tiny-sleepy",
    }


def test_reindex(archived: tuple[Path, Result]) -> None:
    archive, _ = archived
    result = invoke(archive, "reindex")
    assert result.exit_code == 0 and "indexed" in result.stdout
    assert len(Archive(archive).runs()) >= 1


def test_replay_is_a_new_run_of_the_incident(archived: tuple[Path, Result]) -> None:
    archive, _ = archived
    original = Archive(archive).runs(runbook="tiny-latency")[-1]
    result = invoke(archive, "replay", original.run_id, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["incident_id"] == original.incident_id and document["status"] == "succeeded"


def test_a_failed_run_exits_1_and_is_archived(tmp_path: Path) -> None:
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(alert_payload("HighErrorRate")))
    result = invoke(tmp_path / "archive", "run", "--alert", str(alert), "--evidence", str(tmp_path))
    assert result.exit_code == 1
    assert "failed" in result.stderr and "archived all the same" in result.stderr
    [run] = Archive(tmp_path / "archive").runs()
    assert run.runbook == "tiny-broken" and run.status == "failed"
    assert str(run.path) in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["run", "--alert", "-", "--evidence", "."], "{not json", "not valid JSON"),
        (["run", "--alert", "-", "--evidence", "."], '{"version": "4"}', "bad alert field"),
        (["run", "--alert", "missing.json", "--evidence", "."], None, "cannot read"),
        (["run", "nope", "--alert", "alert.json", "--evidence", "."], None, "known: tiny-"),
        (["run", "--alert", "alert.json"], None, "WORKBOOKS_PROMETHEUS_URL"),
        (["run", "--alert", "alert.json", "--prometheus", "http://a:b@x:9"], None, "credentials"),
        (["run", "--alert", "alert.json", "--lookback", "2 hours", "--evidence", "."], None, "30m"),
        (["show", "no-such-run"], None, "workbook list"),
        (["list", "--since", "7x"], None, "not a duration"),
        (["demo", "no-such-runbook"], None, "no demo incident"),
    ],
)
def test_bad_input_exits_2_and_archives_nothing(
    tmp_path: Path, args: list[str], stdin: str | None, message: str
) -> None:
    (tmp_path / "alert.json").write_text(json.dumps(alert_payload()))
    archive = tmp_path / "archive"
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = invoke(archive, *args, input=stdin)
    finally:
        os.chdir(previous)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list(archive.glob("*/*/run.json"))
    assert Archive(archive).runs() == []


def test_the_configured_prometheus_is_the_default_source(tmp_path: Path) -> None:
    (tmp_path / "alert.json").write_text(json.dumps(alert_payload()))
    result = CliRunner().invoke(
        main,
        ["--archive", str(tmp_path / "archive"), "run", "--alert", str(tmp_path / "alert.json")],
        env={"WORKBOOKS_NOTEBOOKS": str(RUNBOOKS), "WORKBOOKS_PROMETHEUS_URL": "http://u:pw@h:9"},
    )
    assert result.exit_code == 0, result.output
    [run] = Archive(tmp_path / "archive").runs()
    assert json.loads((run.path / "evidence" / "seen.json").read_text())["source"] == "prometheus"
    assert run.source == "http://h:9"  # what was read, never the credentials


def test_config_file_reaches_the_command_and_is_not_leaked(tmp_path: Path) -> None:
    config = tmp_path / "workbooks.yaml"
    config.write_text(f"notebooks: {RUNBOOKS}\narchive: {tmp_path / 'from-config'}\n")
    result = CliRunner().invoke(
        main, ["--config", str(config), "runbooks"], env={"WORKBOOKS_NOTEBOOKS": None}
    )
    assert result.exit_code == 0 and "tiny-latency" in result.stdout
    assert "WORKBOOKS_CONFIG" not in os.environ
    listed = CliRunner().invoke(main, ["--config", str(config), "list"], env={})
    assert listed.exit_code == 0 and str(tmp_path / "from-config") in listed.stderr


def test_parse_duration() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    for bad in ("", "7", "d", "7x", "1.5h", "-2h"):
        with pytest.raises(ConfigError, match="not a duration"):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="too short"):
        parse_duration("250ms")
    assert isinstance(main, click.Group)


def test_every_subcommand_has_help_with_an_example() -> None:
    groups = {name: cmd for name, cmd in main.commands.items() if isinstance(cmd, click.Group)}
    assert set(groups["archive"].commands) == {"serve", "prune", "stats"}
    for name, group in groups.items():
        for sub in group.commands:
            result = CliRunner().invoke(main, [name, sub, "--help"])
            assert result.exit_code == 0, (name, sub)
            assert "Example:" in result.output and f"workbook {name} {sub}" in result.output


def _parameters(notebook: Path) -> dict[str, Any]:
    return json.loads(notebook.read_text())["metadata"]["papermill"]["parameters"]


def test_open_prepares_a_workbook_for_a_time_and_labels(tmp_path: Path) -> None:
    result = invoke(
        tmp_path / "archive",
        *("open", "tiny-latency", "--at", "2026-11-20T14:10:00Z", "--label", "service=api"),
        *("--label", "route=/v1/chat", "--prometheus", "http://127.0.0.1:9"),
        *("--folder", str(tmp_path / "inv"), "--prepare-only"),
    )
    assert result.exit_code == 0, result.output
    notebook = tmp_path / "inv" / "tiny-latency.ipynb"
    assert result.stdout.strip() == f"prepared {notebook}"
    parameters = _parameters(notebook)
    assert parameters["labels"] == {"service": "api", "route": "/v1/chat"}
    assert parameters["starts_at"] == "2026-11-20T14:10:00Z"
    assert parameters["source"] == "http://127.0.0.1:9"
    assert parameters["alert_name"] == "HighLatency"  # the runbook's first alertname
    cells = json.loads(notebook.read_text())["cells"]
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in cells)
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")  # nothing ran
    again = invoke(
        tmp_path / "archive",
        *("open", "tiny-latency", "--at", "2026-11-20T14:10:00", "--prometheus", "http://x:9"),
        *("--folder", str(tmp_path / "inv"), "--prepare-only"),
    )
    assert again.exit_code == 0 and "tiny-latency-2.ipynb" in again.stdout  # never overwritten


def test_open_from_an_archived_run_reads_its_evidence(
    archived: tuple[Path, Result], tmp_path: Path
) -> None:
    archive, _ = archived
    run = Archive(archive).runs(runbook="tiny-latency")[-1]
    result = invoke(
        archive, "open", "--from", run.run_id, "--folder", str(tmp_path), "--prepare-only"
    )
    assert result.exit_code == 0, result.output
    parameters = _parameters(tmp_path / "tiny-latency.ipynb")
    assert parameters["source"] == str(run.path / "evidence")
    assert parameters["labels"] == run.labels and parameters["group_key"] == run.group_key
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(alert_payload()))
    from_alert = invoke(
        archive,
        *("open", "--alert", str(alert), "--prometheus", "http://127.0.0.1:9"),
        *("--folder", str(tmp_path / "a"), "--prepare-only"),
    )
    assert from_alert.exit_code == 0, from_alert.output
    assert _parameters(tmp_path / "a" / "tiny-latency.ipynb")["fingerprints"] == ["3f9a2c1b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["open", "tiny-latency", "--prepare-only"], "exactly one of"),
        (["open", "tiny-latency", "--at", "2026-11-20T14:10:00Z", "--from", "x"], "exactly one"),
        (["open", "tiny-latency", "--at", "yesterday"], "is not a time"),
        (["open", "tiny-latency", "--at", "2026-11-20", "--label", "service"], "KEY=VALUE"),
        (["open", "tiny-latency", "--at", "2026-11-20"], "WORKBOOKS_PROMETHEUS_URL"),
        (["open", "nope", "--at", "2026-11-20", "--prometheus", "http://x:9"], "known: tiny-"),
        (["open", "--from", "no-such-run"], "workbook list"),
        (["report", "no-such-run"], "workbook list"),
        (["note", "no-such-incident", "text"], "workbook list"),
        (["note", "no-such-incident", " "], "say what was done"),
        (["archive", "prune", "--older-than", "90 days"], "not a duration"),
    ],
)
def test_postmortem_commands_refuse_bad_input(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = invoke(tmp_path / "archive", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "investigations").exists()


def test_report_and_note(archived: tuple[Path, Result]) -> None:
    archive, _ = archived
    run = Archive(archive).runs(runbook="tiny-latency")[-1]
    html = invoke(archive, "report", run.run_id)
    assert html.exit_code == 0 and html.stdout.strip() == str(run.path / "report.html")
    markdown = invoke(archive, "report", run.incident_id, "--format", "md")
    newest = Archive(archive).get(run.incident_id)
    assert markdown.exit_code == 0 and markdown.stdout.strip() == str(newest.path / "report.md")
    noted = CliRunner().invoke(
        main,
        ["--archive", str(archive), "note", run.run_id, "rolled back 2.4.0"],
        env={"USER": "ana"},
    )
    assert noted.exit_code == 0 and f"noted on {run.incident_id} by ana" in noted.stdout
    by = invoke(archive, "note", run.incident_id, "p99 is back", "--author", "ben")
    assert by.exit_code == 0
    notes = Archive(archive).notes(run.incident_id)
    assert [(n.author, n.text) for n in notes][-2:] == [
        ("ana", "rolled back 2.4.0"),
        ("ben", "p99 is back"),
    ]
    assert invoke(archive, "report", run.run_id).exit_code == 0  # rendered again, notes and all
    assert "p99 is back" in (run.path / "report.html").read_text()
    stats = invoke(archive, "archive", "stats", "--json")
    assert stats.exit_code == 0 and json.loads(stats.stdout)["notes"] >= 2


def _all_commands() -> list[tuple[str, click.Command]]:
    """Every command as typed after ``workbook``: ``list``, ``archive stats``..."""
    found = []
    for name, command in sorted(main.commands.items()):
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", cmd) for sub, cmd in sorted(command.commands.items())]
    return found


@pytest.mark.parametrize(("name", "command"), _all_commands(), ids=lambda v: str(v))
def test_every_command_takes_config_and_archive_after_its_name(
    name: str, command: click.Command
) -> None:
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    assert {"--config", "--archive"} <= options, name
    help_text = CliRunner().invoke(main, [*name.split(), "--help"]).output
    assert "--archive" in help_text and "--config" in help_text


def test_archive_and_config_after_the_command(
    archived: tuple[Path, Result], tmp_path: Path
) -> None:
    archive, _ = archived
    env = {"WORKBOOKS_NOTEBOOKS": str(RUNBOOKS), "WORKBOOKS_ARCHIVE": None}
    listed = CliRunner().invoke(main, ["list", "--archive", str(archive), "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert {run["runbook"] for run in json.loads(listed.stdout)} >= {"tiny-latency"}
    # The one typed after the command wins over the one before it.
    elsewhere = CliRunner().invoke(
        main, ["--archive", str(tmp_path / "empty"), "list", "--archive", str(archive)], env=env
    )
    assert elsewhere.exit_code == 0 and "tiny-latency" in elsewhere.stdout
    stats = CliRunner().invoke(main, ["archive", "stats", "--archive", str(archive), "--json"])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["runs"] >= 1
    config = tmp_path / "workbooks.yaml"
    config.write_text(f"notebooks: {RUNBOOKS}\narchive: {archive}\n")
    shown = CliRunner().invoke(
        main, ["runbooks", "--config", str(config)], env={"WORKBOOKS_NOTEBOOKS": None}
    )
    assert shown.exit_code == 0 and "tiny-latency" in shown.stdout, shown.output
    assert "WORKBOOKS_CONFIG" not in os.environ
    from_config = CliRunner().invoke(main, ["list", "--config", str(config)], env={})
    assert from_config.exit_code == 0 and "tiny-latency" in from_config.stdout


def test_runbooks_shows_what_the_config_routes_where(tmp_path: Path) -> None:
    config = tmp_path / "workbooks.yaml"
    config.write_text(
        f"notebooks: {RUNBOOKS}\n"
        "routing:\n"
        "  - {match: {alertname: MyP99}, runbook: tiny-latency}\n"
        "  - {match: {team: db, severity: critical}, runbook: tiny-broken}\n"
    )
    env = {"WORKBOOKS_NOTEBOOKS": None}
    table = CliRunner().invoke(main, ["runbooks", "--config", str(config)], env=env)
    assert table.exit_code == 0, table.output
    [latency] = [line for line in table.stdout.splitlines() if line.startswith("tiny-latency")]
    assert "HighLatency" in latency and "alertname=MyP99" in latency
    listed = CliRunner().invoke(main, ["runbooks", "--config", str(config), "--json"], env=env)
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert rows["tiny-broken"]["routing"] == [{"team": "db", "severity": "critical"}]
    assert rows["tiny-sleepy"]["routing"] == []


def test_a_routing_rule_for_an_unknown_runbook_is_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "workbooks.yaml"
    config.write_text(
        f"notebooks: {RUNBOOKS}\nrouting: [{{match: {{team: db}}, runbook: database-issues}}]\n"
    )
    result = CliRunner().invoke(
        main, ["runbooks", "--config", str(config)], env={"WORKBOOKS_NOTEBOOKS": None}
    )
    assert result.exit_code == 2
    assert "routing rule 1 (team=db)" in result.output and "'database-issues'" in result.output
    assert "known: tiny-broken, tiny-latency, tiny-sleepy" in result.output


def test_a_team_alert_routes_by_config_without_editing_a_notebook(tmp_path: Path) -> None:
    config = tmp_path / "workbooks.yaml"
    config.write_text(
        f"notebooks: {RUNBOOKS}\n"
        "routing: [{match: {alertname: MyP99}, runbook: tiny-latency}]\n"
    )
    alert = tmp_path / "alert.json"
    alert.write_text(json.dumps(alert_payload("MyP99")))
    args = ["run", "--alert", str(alert), "--evidence", str(tmp_path), "--json"]
    refused = invoke(tmp_path / "archive", *args)
    assert refused.exit_code == 2 and "routing:" in refused.output  # says how to route it
    result = CliRunner().invoke(
        main,
        [*args, "--config", str(config), "--archive", str(tmp_path / "archive")],
        env={"WORKBOOKS_NOTEBOOKS": None, "WORKBOOKS_PROMETHEUS_URL": None},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["runbook"] == "tiny-latency" and document["alert_name"] == "MyP99"
