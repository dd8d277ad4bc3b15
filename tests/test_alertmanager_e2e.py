"""End to end with the real thing: Prometheus rule -> Alertmanager -> `workbook serve` -> archive.

Prometheus holds a backfilled slow-route incident whose history runs past "now", so its alert
rule, which only ever evaluates at the current time, fires. Alertmanager, configured with the
receiver block of docs/alertmanager.md as pasted, posts to the service (a real subprocess), and
the high-latency workbook runs against that Prometheus and is archived.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
import yaml

from test_service import TOKEN, ServiceProcess, free_port, wait_for
from workbooks.archive.store import Archive
from workbooks.synthetic.scenarios import make_scenario, write_openmetrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "alertmanager.md"
ALERTMANAGER = "prometheus-alertmanager"
SERVICE = "svc-e2e"

pytestmark = pytest.mark.slow


def _need(*binaries: str) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make system-deps)")


def documented_alertmanager_config() -> str:
    """The YAML block of docs/alertmanager.md that configures Alertmanager."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [block for block in blocks if "receivers:" in block]
    return block


@dataclass
class Daemon:
    """A binary started on a loopback port; ``stop()`` ends it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _start(command: list[str], url: str, workdir: Path, name: str) -> Daemon:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    daemon = Daemon(process, url, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited {process.returncode}:\n{daemon.log()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 20, f"{name} on {url}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def start_alertmanager(service_url: str, workdir: Path) -> Daemon:
    """Alertmanager with the documented receiver pointed at ``service_url``, fast timings."""
    text = documented_alertmanager_config()
    text = text.replace("http://127.0.0.1:9095/alerts", f"{service_url}/alerts")
    text = text.replace("REPLACE-WITH-WORKBOOKS_WEBHOOK_TOKEN", TOKEN)
    config = yaml.safe_load(text)
    config["route"].update(group_wait="1s", group_interval="5s")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        ALERTMANAGER,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        f"--web.external-url={url}",
    ]
    return _start(command, url, workdir, "alertmanager")


_P99 = (
    "histogram_quantile(0.99, sum by (service, route, le) "
    '(rate(http_request_duration_seconds_bucket{{service="{service}"}}[5m]{offset})))'
)


def start_prometheus_with_rule(
    alertmanager_url: str, workdir: Path, port: int, **scenario: Any
) -> Daemon:
    """A backfilled slow-route incident ending after now, and a rule that fires on it now."""
    incident = make_scenario("high-latency", "slow_route", service=SERVICE, **scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    history = write_openmetrics([incident], workdir / "history.om")
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(history), "data"],
        cwd=workdir,
        check=True,
        capture_output=True,
    )
    now, before = (_P99.format(service=SERVICE, offset=o) for o in ("", " offset 1d"))
    rules = {
        "groups": [
            {
                "name": "workbooks-e2e",
                "rules": [
                    {
                        "alert": "HighLatency",
                        "expr": f"max by (service) ({now} / {before}) > 2",
                        "labels": {"severity": "critical"},
                        "annotations": {"summary": "p99 latency doubled on {{ $labels.service }}"},
                    }
                ],
            }
        ]
    }
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1m", "evaluation_interval": "5s"},
        "rule_files": ["rules.yml"],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
            ]
        },
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    command = [
        "prometheus",
        "--config.file=prometheus.yml",
        "--storage.tsdb.path=data",
        "--storage.tsdb.retention.time=10y",
        f"--web.listen-address=127.0.0.1:{port}",
        # An alert of the first evaluation may go out before Alertmanager is known; the
        # default would re-send it a minute later.
        "--rules.alert.resend-delay=1s",
    ]
    return _start(command, url, workdir, "prometheus")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    started: list[Any] = []
    yield {"started": started}
    for each in reversed(started):
        each.stop()


def test_amtool_accepts_the_documented_config(tmp_path: Path) -> None:
    _need("amtool")
    config = tmp_path / "alertmanager.yml"
    config.write_text(documented_alertmanager_config())
    checked = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "1 receivers" in checked.stdout


@pytest.mark.prometheus
def test_a_firing_rule_becomes_an_archived_workbook(tmp_path: Path, stack: dict) -> None:
    _need("prometheus", "promtool", ALERTMANAGER)
    archive = tmp_path / "archive"
    prometheus_port = free_port()
    service = ServiceProcess(
        archive,
        workers=1,
        prometheus=f"http://127.0.0.1:{prometheus_port}",
        notebooks=None,  # the project's own runbooks
    )
    stack["started"].append(service)
    alertmanager = start_alertmanager(service.url, tmp_path / "am")
    stack["started"].append(alertmanager)
    prometheus = start_prometheus_with_rule(
        alertmanager.url, tmp_path / "prom", prometheus_port, seed=7
    )
    stack["started"].append(prometheus)

    runs = wait_for(
        lambda: Archive(archive).runs(),
        150,
        f"an archived run\n--- service ---\n{service.log()}\n--- am ---\n{alertmanager.log()}",
    )
    (run,) = runs
    assert run.runbook == "high-latency" and run.alert_name == "HighLatency"
    assert run.status == "succeeded", run.error
    assert run.labels == {"alertname": "HighLatency", "service": SERVICE, "severity": "critical"}
    assert run.source == f"http://127.0.0.1:{prometheus_port}"

    delivered = json.loads((run.path / "alert.json").read_text())
    assert delivered["receiver"] == "workbooks" and delivered["groupKey"].startswith("{}:")
    executed = nbformat.read(run.path / "workbook.ipynb", as_version=4)
    (injected,) = [
        cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", [])
    ]
    parameters = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(injected.source).body
        if isinstance(node, ast.Assign)
    }
    assert parameters["labels"] == run.labels
    assert parameters["alert_name"] == "HighLatency" and parameters["status"] == "firing"
    assert parameters["group_key"] == delivered["groupKey"]
    assert parameters["fingerprints"] == [delivered["alerts"][0]["fingerprint"]]
    top = Archive(archive).findings(run)[0]
    assert top.subject.get("route") == "/v1/vision", top

    # Alertmanager repeats nothing within repeat_interval, and the service ran it once.
    ledger = requests.get(f"{service.url}/healthz", timeout=10).json()["runs"]
    assert ledger == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0}


def test_alertmanager_resolves_what_it_fired(tmp_path: Path, stack: dict) -> None:
    """Through Alertmanager's API, no Prometheus: the resolved notice marks the incident."""
    _need(ALERTMANAGER)
    archive = tmp_path / "archive"
    service = ServiceProcess(archive, workers=1)
    stack["started"].append(service)
    alertmanager = start_alertmanager(service.url, tmp_path / "am")
    stack["started"].append(alertmanager)
    labels = {"alertname": "EchoAlert", "service": "svc-am", "severity": "warning"}
    started = datetime.now(UTC).replace(microsecond=0)

    def post(ends: datetime) -> None:
        alert = {
            "labels": labels,
            "annotations": {"summary": "echo"},
            "startsAt": started.isoformat(),
            "endsAt": ends.isoformat(),
        }
        response = requests.post(f"{alertmanager.url}/api/v2/alerts", json=[alert], timeout=10)
        assert response.status_code == 200, response.text

    post(started + timedelta(hours=1))
    (run,) = wait_for(lambda: Archive(archive).runs(), 60, f"the run\n{service.log()}")
    assert Archive(archive).incident(run.incident_id).status == "firing"
    post(datetime.now(UTC))
    wait_for(
        lambda: Archive(archive).incident(run.incident_id).status == "resolved",
        60,
        f"the resolution\n{service.log()}\n{alertmanager.log()}",
    )
    assert len(Archive(archive).runs()) == 1  # a resolution starts no run
