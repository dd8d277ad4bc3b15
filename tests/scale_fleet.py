"""A fleet on one machine that shares what separate hosts would: intake, workers, Redis.

``workbook serve --role intake`` and ``workbook worker`` processes, each in a working directory
of its own (its own cache, nothing shared on disk unless the archive is a local folder), run the
tests' tiny runbooks (``tests/notebooks/service``: ``svc-echo`` sleeps ``sleep_seconds`` from its
alert's labels) on the demo source, so no Prometheus is needed. Used by tests/test_scale.py and
benchmarks/scale.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "notebooks" / "service"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not done after {timeout:g} s")


def delivery(group: int, *, alerts: int = 4, sleep: float = 0.0, prefix: str = "fleet") -> dict:
    """One Alertmanager delivery: ``alerts`` firing alerts of one group (``svc-echo``)."""
    labels = {"alertname": "EchoAlert", "service": f"{prefix}-{group}"}
    if sleep:
        labels["sleep_seconds"] = str(sleep)
    return {
        "version": "4",
        "status": "firing",
        "receiver": "workbooks",
        "groupKey": f'{{}}:{{service="{prefix}-{group}"}}',
        "commonLabels": labels,
        "alerts": [
            {
                "status": "firing",
                "labels": {**labels, "pod": f"pod-{i}"},
                "annotations": {"summary": "fleet"},
                "startsAt": "2026-11-28T14:05:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": f"{prefix}-{group}-{i}",
            }
            for i in range(alerts)
        ],
    }


@dataclass
class Fleet:
    """Processes started under ``base``; :meth:`stop` ends every one of them (and its kernels)."""

    base: Path
    archive: str
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)
    notebooks: Path | None = TINY  # None: the project's runbooks (for the demo evidence)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""
    _ledger: Any = field(default=None, repr=False)  # the intake's ledger, read by busy_worker

    def _environment(self, home: Path) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.pop("WORKBOOKS_ARCHIVE_CACHE", None)
        env.pop("WORKBOOKS_NOTEBOOKS", None)
        if self.notebooks is not None:
            env["WORKBOOKS_NOTEBOOKS"] = str(self.notebooks)
        env.update(
            WORKBOOKS_EVIDENCE_DIR="off",
            WORKBOOKS_RECOVERY_INTERVAL_SECONDS="1",
            XDG_CACHE_HOME=str(home / "cache"),  # this "host"'s own cache of the archive
        )
        return env

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        home = self.base / name
        home.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "workbooks", "--archive", self.archive, *argv]
        with (home / "log.txt").open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=home,
                env=self._environment(home),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill takes its kernels with it
            )
        self.processes[name] = process
        return process

    def start_intake(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        argv = ["serve", "--role", "intake", "--redis", self.redis_url, "--port", str(port)]
        self._start("intake", [*argv, "--prometheus", "demo"])
        wait_until(self._intake_up, 60, "the intake")

    def _intake_up(self) -> bool:
        if self.processes["intake"].poll() is not None:
            raise RuntimeError(f"the intake exited:\n{self.log('intake')}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).ok
        except requests.ConnectionError:
            return False

    def start_worker(self, name: str, *, threads: int = 1) -> subprocess.Popen[bytes]:
        argv = ["worker", "--redis", self.redis_url, "--workers", str(threads), "--name", name]
        return self._start(name, argv)

    def post(self, payload: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/alerts", json=payload, timeout=30)

    def log(self, name: str) -> str:
        return (self.base / name / "log.txt").read_text(errors="replace")

    def busy_worker(self, names: list[str]) -> str | None:
        """The worker that has claimed a run in the ledger and is alive, if one has.

        Not "a worker with a kernel": every worker keeps a warm kernel, busy or not.
        """
        if self._ledger is None:
            from workbooks.service.intake import Intake

            self._ledger = Intake.in_archive(
                self.archive,  # the folder's intake.sqlite, unless the ledger is PostgreSQL
                database=self.env.get("WORKBOOKS_DATABASE_URL"),
                dedup_window_seconds=0,
            )
        alive = {
            str(self.processes[name].pid): name
            for name in names
            if self.processes[name].poll() is None
        }
        for run in self._ledger.runs(state="running"):
            pid = (run.owner or "").split(":")[1:2]  # the owner is host:pid:instance
            if pid and pid[0] in alive:
                return alive[pid[0]]
        return None

    def kill(self, name: str) -> None:
        """SIGKILL a worker, as a host dying would (its kernels, in sessions of their own, exit
        on their own within a second: ipykernel watches its parent's pid)."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            # Anything else of the worker's group left behind: never leave a process running.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
