"""Run summaries: the template, inert label values, and real deliveries to local HTTP servers.

apprise posts ``json://`` targets to a real local server here. Its Slack plugin always posts to
``https://hooks.slack.com``; these tests point that one class attribute (``webhook_url``) at a
local Slack-compatible receiver, so the plugin's own code builds and sends the real payload.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from apprise.plugins.slack import NotifySlack

from test_service import ServiceThread, alert, delivery, free_port, service_config, wait_for
from workbooks.archive.store import RunRecord
from workbooks.core.config import Config, load_config
from workbooks.core.contacts import NotificationSettings
from workbooks.core.errors import ConfigError
from workbooks.core.findings import Finding
from workbooks.service.app import Service
from workbooks.service.notify import inert, notify_run, render, send

SLACK_TOKENS = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"


class Receiver:
    """A real HTTP server on a loopback port that keeps what is posted to it."""

    def __init__(self) -> None:
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                posts.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def slack(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://127.0.0.1:{receiver.port}/services")
    return receiver


def record(tmp_path: Path, **changes: Any) -> RunRecord:
    moment = datetime(2026, 11, 28, 14, 10, tzinfo=UTC)
    fields = {
        "run_id": "20261128T141000Z-high-latency",
        "incident_id": "20261128T1405Z-highlatency-3f9a2c1b",
        "runbook": "high-latency",
        "runbook_hash": "0123456789ab",
        "status": "succeeded",
        "started_at": moment,
        "finished_at": moment,
        "duration_seconds": 4.2,
        "source": "http://prometheus:9090",
        "alert_name": "HighLatency",
        "severity": "critical",
        "service": "inference-api",
        "alert_status": "firing",
        "labels": {"alertname": "HighLatency", "service": "inference-api"},
        "path": tmp_path / "incident" / "run",
    }
    return RunRecord(**{**fields, **changes})


FINDINGS = [
    Finding(severity="warning", title="errors steady"),
    Finding(severity="critical", title="p99 of /v1/vision rose 4.1x", likely_cause=True),
    Finding(severity="info", title="load as usual"),
    Finding(severity="critical", title="p99 latency 3.8 s"),
    Finding(severity="info", title="no rollout in the window"),
]


def test_the_summary_has_the_top_three_findings_and_where_to_look(tmp_path: Path) -> None:
    title, body = render(record(tmp_path), FINDINGS, config=Config())
    assert title == "HighLatency (critical): high-latency investigated"
    assert "**HighLatency** (critical, firing) on inference-api" in body
    lines = [line for line in body.splitlines() if line.startswith("- ")]
    assert lines == [
        "- 🔴 **critical**: p99 of /v1/vision rose 4.1x",
        "- 🔴 **critical**: p99 latency 3.8 s",
        "- 🟠 **warning**: errors steady",
        "- … and 2 more",
    ]
    assert f"`{tmp_path / 'incident' / 'run' / 'workbook.ipynb'}`" in body
    assert "`workbook show 20261128T141000Z-high-latency`" in body
    assert "ML Engineering Team (#mobile-ml-alerts)" in body


def test_a_failed_run_says_so_with_its_error(tmp_path: Path) -> None:
    error = {"kind": "exception", "message": "cell 4 raised KeyError: 'route'"}
    title, body = render(record(tmp_path, status="failed", error=error), [], config=Config())
    assert title.endswith("run FAILED")
    assert "FAILED after 4.2 s: cell 4 raised KeyError: 'route'" in body
    assert "No findings were recorded." in body


def test_values_from_the_alert_cannot_ping_or_forge_lines(tmp_path: Path) -> None:
    hostile = "api <!channel> <@U123|boss>\n- 🔴 **critical**: forged"
    run = record(tmp_path, service=hostile, alert_name="High<!here>Latency")
    title, body = render(run, [Finding(severity="info", title=hostile)], config=Config())
    for text in (title, body):
        assert "<!" not in text and "<@" not in text
    assert "forged" not in "".join(line for line in body.splitlines() if line.startswith("- 🔴"))
    assert inert("x" * 1000).endswith("…") and len(inert("x" * 1000)) == 300


def test_a_team_template_replaces_the_default(tmp_path: Path) -> None:
    template = tmp_path / "short.j2"
    template.write_text("{{ alert_name }} {{ status }}: {{ findings[0].title }}\n")
    config = Config(notifications=NotificationSettings(template=str(template)))
    assert render(record(tmp_path), FINDINGS, config=config)[1] == (
        "HighLatency succeeded: p99 of /v1/vision rose 4.1x\n"
    )
    missing = Config(notifications=NotificationSettings(template=str(tmp_path / "gone.j2")))
    with pytest.raises(ConfigError, match=r"notifications\.template"):
        render(record(tmp_path), FINDINGS, config=missing)


def test_json_targets_get_the_summary(tmp_path: Path, receiver: Receiver) -> None:
    delivered = send("title", "**body**", [f"json://127.0.0.1:{receiver.port}/hook"])
    assert delivered.sent == 1 and delivered.failed == []
    ((path, payload),) = receiver.posts
    assert path == "/hook"
    assert payload["title"] == "title" and "body" in payload["message"]
    assert payload["type"] == "success"


def test_slack_gets_mrkdwn_without_mentions(tmp_path: Path, slack: Receiver) -> None:
    run = record(tmp_path, service="api <!channel>")
    config = Config(notifications=NotificationSettings(targets=[f"slack://{SLACK_TOKENS}/"]))
    delivered = notify_run(run, FINDINGS, config=config)
    assert delivered.sent == 1
    ((path, payload),) = slack.posts
    assert path == f"/services/{SLACK_TOKENS}"
    (attachment,) = payload["attachments"]
    assert payload["mrkdwn"] is True
    assert attachment["title"] == "HighLatency (critical): high-latency investigated"
    assert "*critical*: p99 of /v1/vision rose 4.1x" in attachment["text"]
    assert "workbook show 20261128T141000Z-high-latency" in attachment["text"]
    assert "<!channel" not in json.dumps(payload)


def test_a_dead_target_fails_alone_and_hides_its_secret(receiver: Receiver) -> None:
    dead = f"json://127.0.0.1:{free_port()}/secret-path"
    delivered = send("t", "b", [dead, f"json://127.0.0.1:{receiver.port}/ok", "nonsense"])
    assert delivered.sent == 1 and len(delivered.failed) == 2
    assert not any("secret-path" in target for target in delivered.failed)
    assert len(receiver.posts) == 1


def test_a_failed_notification_never_fails_the_run(tmp_path: Path, receiver: Receiver) -> None:
    archive = tmp_path / "archive"
    targets = [f"json://127.0.0.1:{free_port()}/", f"json://127.0.0.1:{receiver.port}/"]
    config = service_config(archive).model_copy(
        update={"notifications": NotificationSettings(targets=targets)}
    )
    service = Service(config=config, archive_dir=archive, source="demo", workers=1)
    with ServiceThread(service) as running:
        assert running.post(delivery(alert())).status_code == 202
        wait_for(lambda: running.metric("workbooks_notifications_sent_total") == 1, 60, "a post")
        assert running.metric("workbooks_notifications_failed_total") == 1
        assert running.metric("workbooks_runs_succeeded_total") == 1
    (run,) = service.archive.runs()
    assert run.status == "succeeded"
    ((_, payload),) = receiver.posts
    assert f"workbook show {run.run_id}" in payload["message"]
    assert "EchoAlert echoed for 1 alerts" in payload["message"]


def test_a_group_with_its_own_targets_gets_its_runbooks_summaries(
    tmp_path: Path, receiver: Receiver
) -> None:
    security_desk = Receiver()
    try:
        config = Config.model_validate(
            {
                "notifications": {
                    "targets": [f"json://127.0.0.1:{receiver.port}/sre"],
                    "groups": {
                        "security": {"targets": [f"json://127.0.0.1:{security_desk.port}/sec"]}
                    },
                },
                "escalation": {
                    "primary": "SRE on-call",
                    "groups": {"security": {"primary": "Security on-call", "slack": "#sec"}},
                },
            }
        )
        breach = record(tmp_path, runbook="unauthorized-access", alert_name="HighAuthFailureRate")
        assert notify_run(breach, FINDINGS, config=config).sent == 1
        assert notify_run(record(tmp_path), FINDINGS, config=config).sent == 1

        ((path, payload),) = security_desk.posts
        assert path == "/sec" and "unauthorized-access" in payload["title"]
        assert "escalate to Security on-call (#sec)" in payload["message"]
        ((path, payload),) = receiver.posts  # the service group has no targets of its own
        assert path == "/sre" and "high-latency" in payload["title"]
        assert "escalate to SRE on-call" in payload["message"]
    finally:
        security_desk.close()


def test_notification_groups_must_be_runbook_groups(tmp_path: Path) -> None:
    path = tmp_path / "workbooks.yaml"
    path.write_text("notifications:\n  groups:\n    secops: {targets: ['json://127.0.0.1/']}\n")
    with pytest.raises(ConfigError, match="unknown runbook group secops; the groups are service"):
        load_config(path, env={})
