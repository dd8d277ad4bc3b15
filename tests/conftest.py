"""Shared fixtures: a real Prometheus loaded with every end-to-end case, and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import Case, all_cases

ROOT = Path(__file__).resolve().parents[1]

# Workbooks run by the tests never write evidence into the source tree.
os.environ.setdefault("WORKBOOKS_EVIDENCE_DIR", "off")


# Every runbook's end-to-end cases, as its scenario module declares them (one planted cause
# each, or a quiet control; each under its own service). tests/data/cases holds their evidence.
CASES: list[Case] = all_cases()
CASES_DIR = ROOT / "tests" / "data" / "cases"
# One case per runbook also runs live against a real Prometheus (test_e2e_runbooks.py): its
# queries there, and its recording checked against what Prometheus answers today. Every case's
# diagnosis is checked on its recording (test_replay_cases.py), where live data adds nothing.
LIVE_CASES: list[Case] = [
    next(case for case in CASES if case.runbook == runbook and case.expect)
    for runbook in sorted({case.runbook for case in CASES})
]


def assert_same_evidence(fresh: Path, recorded: Path) -> None:
    """Two evidence folders hold the same queries over the same window with the same data."""
    import pandas as pd

    old = json.loads((recorded / "manifest.json").read_text())
    new = json.loads((fresh / "manifest.json").read_text())
    assert new["window"] == old["window"]
    assert sorted((e["name"], e["role"], e["query"]) for e in new["entries"]) == sorted(
        (e["name"], e["role"], e["query"]) for e in old["entries"]
    ), "the runbook's queries changed: run scripts/record-demo --cases"
    for entry in old["entries"]:
        if re.search(r"\b(topk|bottomk)\s*\(", entry["query"]):
            # Which of several tied series topk keeps is Prometheus's map order: not stable
            # from one Prometheus to the next. The query text is compared above.
            continue
        expected = pd.read_parquet(recorded / entry["file"])
        actual = pd.read_parquet(fresh / entry["file"])
        pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9)


# The test files that take longest, in seconds on 3 workers and 2 cores (a run of `make test`'s
# first part with every test's start and end logged, at e385199). They run first: pytest-xdist
# hands a worker a whole file and, by default, the files with most tests first, which left
# test_scale.py (2 tests, 4 minutes) to start 15 minutes in while the other workers sat idle.
# Longest first, as `make test` runs them (`--no-loadscope-reorder`). On 2 cores the suite is
# bound by CPU and it gains little (fresh-clone CI, the first part: 18 min 57 s -> 18 min 44 s);
# replaying that run's test times predicts more where cores are spare (4 workers: 832 -> 722 s).
# The rest follow in their usual order.
LONGEST_FILES = {
    "test_replay_cases.py": 500,
    "test_e2e_runbooks.py": 354,
    "test_scale.py": 246,
    "test_scenarios.py": 217,
    "test_every_runbook.py": 191,
    "test_notebooks.py": 152,
    "test_runbook_database_issues.py": 141,
    "test_demo.py": 139,
    "test_pg_backend.py": 115,
    "test_runbook_low_disk_space.py": 92,
    "test_hostile.py": 70,
    "test_storm.py": 69,
    "test_authoring.py": 66,
    "test_service.py": 62,
    "test_runbook_service_down.py": 55,
    "test_cli.py": 53,
    "test_exporters.py": 46,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first (stable: a file's own tests keep their order)."""
    items.sort(key=lambda item: -LONGEST_FILES.get(item.path.name, 0))


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
