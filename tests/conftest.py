"""Shared fixtures: a real Prometheus loaded with every end-to-end scenario, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import Scenario, make_scenario

ROOT = Path(__file__).resolve().parents[1]

# Workbooks run by the tests never write evidence into the source tree.
os.environ.setdefault("WORKBOOKS_EVIDENCE_DIR", "off")


@dataclass(frozen=True)
class Case:
    """One planted incident: the scenario, and the labels the top finding must name."""

    id: str
    scenario: Scenario
    expect: dict[str, str]  # {} for a quiet control: no critical finding allowed


def _case(id: str, runbook: str, cause: str, expect: dict[str, str], **kw: Any) -> Case:
    return Case(id, make_scenario(runbook, cause, service=f"svc-{id}", **kw), expect)


# Different seeds, magnitudes and culprits; in each runbook one case where the culprit is not
# the largest absolute value (/v1/audio is always the slowest route, api-3 always the largest
# process, audio-transcribe always the least accurate eval set).
CASES: list[Case] = [
    _case(
        "lat-vision", "high-latency", "slow_route", {"route": "/v1/vision"}, seed=11, magnitude=4.0
    ),
    _case(
        "lat-chat",
        "high-latency",
        "slow_route",
        {"route": "/v1/chat"},
        seed=12,
        magnitude=2.5,
        affected={"route": "/v1/chat"},
    ),
    _case(
        "lat-embed",
        "high-latency",
        "slow_route",
        {"route": "/v1/embed"},
        seed=13,
        magnitude=6.0,
        affected={"route": "/v1/embed"},
    ),
    _case(
        "lat-version",
        "high-latency",
        "bad_version",
        {"model_version": "2.4.0"},
        seed=14,
        magnitude=3.0,
    ),
    _case("lat-quiet", "high-latency", "none", {}, seed=15),
    _case("mem-leak-1", "high-memory", "leak", {"instance": "api-1"}, seed=21, magnitude=3.0),
    _case(
        "mem-leak-0",
        "high-memory",
        "leak",
        {"instance": "api-0"},
        seed=22,
        magnitude=2.0,
        affected={"instance": "api-0"},
    ),
    _case(
        "mem-step",
        "high-memory",
        "step",
        {"instance": "api-2", "model_version": "2.4.0"},
        seed=23,
        magnitude=3.0,
        affected={"instance": "api-2"},
    ),
    _case("mem-quiet", "high-memory", "none", {}, seed=24),
    _case(
        "acc-vision",
        "accuracy-drop",
        "version_regression",
        {"model_version": "2.4.0", "eval_set": "vision-qa"},
        seed=31,
        magnitude=0.06,
    ),
    _case(
        "acc-ocr",
        "accuracy-drop",
        "version_regression",
        {"model_version": "2.4.0", "eval_set": "ocr"},
        seed=32,
        magnitude=0.04,
        affected={"eval_set": "ocr"},
    ),
    _case(
        "acc-general",
        "accuracy-drop",
        "version_regression",
        {"model_version": "2.4.0", "eval_set": "general"},
        seed=33,
        magnitude=0.08,
        affected={"eval_set": "general"},
    ),
    _case("acc-quiet", "accuracy-drop", "none", {}, seed=34),
]


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One real Prometheus holding every case (each under its own `service`)."""
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    server = start_prometheus([case.scenario for case in CASES], tmp_path_factory.mktemp("prom"))
    yield server
    server.stop()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(
    *args: str,
    archive: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 240,
) -> CliResult:
    """The installed `workbook` command, as a user runs it, in a real subprocess."""
    environment = {**os.environ, "WORKBOOKS_ARCHIVE": str(archive), **(env or {})}
    environment.pop("WORKBOOKS_EVIDENCE_DIR", None)  # runs keep their evidence in the archive
    completed = subprocess.run(
        [sys.executable, "-m", "workbooks", *args],
        capture_output=True,
        text=True,
        env=environment,
        input=stdin,
        timeout=timeout,
        cwd=ROOT,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli(tmp_path: Path):
    """run_cli bound to a fresh archive folder: `cli("run", ...)`; `cli.archive` is the folder."""

    def call(*args: str, **kw: Any) -> CliResult:
        return run_cli(*args, archive=tmp_path / "archive", **kw)

    call.archive = tmp_path / "archive"  # type: ignore[attr-defined]
    return call
