"""Real processes on loopback ports for the real-exporter tests, and a Prometheus scraping them.

Every starter returns a running, ready-checked `LiveProcess` (or subclass) whose output goes to a
log file kept for error messages; a start that fails stops what it started and raises
`LabError` with the log's tail. Use them as context managers, or call `stop()` in a `finally`:

    with start_node_exporter(tmp_path / "node") as node, start_live_prometheus(
        [ScrapeTarget("node", node.address, {"instance": "host-a"})], tmp_path / "prom"
    ) as prometheus:
        prometheus.wait_for('node_load1{instance="host-a"}')

Nothing here runs in a workbook: it is the lab the infrastructure runbooks are proven on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbooks.core.errors import WorkbooksError

READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0


class LabError(WorkbooksError):
    """A lab process (Prometheus, an exporter, PostgreSQL) would not start or answer."""


class NotPermittedError(LabError):
    """The machine forbids a lab step (mounting a tmpfs needs root); tests skip on it."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before we bind it;
    a clash shows up as "address already in use" in the not-ready error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_ok(url: str, timeout_seconds: float = 1.0) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@dataclass
class LiveProcess:
    """A process started by the lab; `stop()` ends it and everything it started."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""  # host:port it listens on, "" when it does not
    stop_signal: int = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Signal the process, wait, then kill its whole process group if it lingers."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(self.stop_signal)
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        # start_new_session made the child a group leader: its children go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> LiveProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_process(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    ready: Callable[[], bool],
    address: str = "",
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
    timeout_seconds: float = READY_TIMEOUT_SECONDS,
) -> LiveProcess:
    """Start `argv` with its output in `workdir/NAME.log` and wait until `ready()` is true.

    Raises LabError (after stopping it) when it exits early or is not ready in time.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    environment = {**os.environ, **(env or {})}
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                user=user,
                start_new_session=True,
            )
    except OSError as exc:
        raise LabError(
            f"cannot start {name} ({argv[0]}): {exc}; install it with scripts/install-system-deps"
        ) from exc
    live = LiveProcess(name, process, log_path, address, stop_signal)
    wait_ready(live, ready, timeout_seconds)
    return live


def wait_ready(live: LiveProcess, ready: Callable[[], bool], timeout_seconds: float) -> None:
    """Poll `ready()`; on an early exit or a timeout stop `live` and raise with its log."""
    started = time.monotonic()
    while not _ready_now(live, ready):
        elapsed = time.monotonic() - started
        if not live.running or elapsed > timeout_seconds:
            why = f"exited with {live.process.returncode}" if not live.running else "not ready"
            live.stop()
            raise LabError(
                f"{live.name} {why} after {elapsed:.1f}s; its log "
                f"({live.log_path}) ends:\n{live.log()[-3000:]}"
            )
        time.sleep(0.05)


def _ready_now(live: LiveProcess, ready: Callable[[], bool]) -> bool:
    try:
        return ready()
    except Exception:
        live.stop()  # a broken check must not leave the process behind
        raise


@dataclass(frozen=True)
class ScrapeTarget:
    """One target for the live Prometheus, with the labels its series must carry.

    `labels` become target labels on every series; setting `instance` replaces the default
    host:port. With `probe` set, `address` is a blackbox_exporter and the probed URL becomes the
    `instance` label (the standard blackbox relabelling).
    """

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"
    probe: str | None = None  # URL probed through the blackbox_exporter at `address`
    module: str = "http_2xx"


def probe_target(
    job: str, blackbox_address: str, url: str, labels: Mapping[str, str] | None = None
) -> ScrapeTarget:
    """A blackbox probe of `url` (module http_2xx), its series labelled instance=`url`."""
    return ScrapeTarget(job, blackbox_address, labels or {}, metrics_path="/probe", probe=url)


def scrape_config(targets: Sequence[ScrapeTarget], interval_seconds: float) -> dict[str, Any]:
    """The prometheus.yml for `targets`, scraped and evaluated every `interval_seconds`."""
    interval = f"{interval_seconds:g}s"
    jobs: dict[str, dict[str, Any]] = {}
    for target in targets:
        job = jobs.setdefault(
            target.job,
            {
                "job_name": target.job,
                "metrics_path": target.metrics_path,
                "static_configs": [],
            },
        )
        if target.probe is None:
            job["static_configs"].append(
                {"targets": [target.address], "labels": dict(target.labels)}
            )
            continue
        job["params"] = {"module": [target.module]}
        job["static_configs"].append({"targets": [target.probe], "labels": dict(target.labels)})
        job["relabel_configs"] = [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": target.address},
        ]
    return {
        "global": {
            "scrape_interval": interval,
            # The default timeout (10s) is longer than a 1s interval, which Prometheus rejects.
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": list(jobs.values()),
    }


@dataclass
class LivePrometheus(LiveProcess):
    """A Prometheus scraping live targets; query it as the runbooks will."""

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query now; the API's `data.result` list."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)["data"]["result"]
        except urllib.error.HTTPError as exc:
            raise LabError(f"query {expr!r} rejected: {exc.read().decode()}") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise LabError(
                f"Prometheus at {self.url} did not answer {expr!r} ({exc}); its log "
                f"ends:\n{self.log()[-2000:]}"
            ) from exc

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The result as {sorted label items: value}, for compact assertions."""
        return {
            tuple(sorted(item["metric"].items())): float(item["value"][1])
            for item in self.query(expr)
        }

    def wait_for(
        self,
        expr: str,
        until: Callable[[list[float]], bool] = bool,
        *,
        timeout_seconds: float = 60.0,
    ) -> list[float]:
        """Poll `expr` until `until(values)` holds (default: any series); returns the values.

        Raises LabError with the last answer when it does not hold in time.
        """
        started = time.monotonic()
        while True:
            values = [float(item["value"][1]) for item in self.query(expr)]
            if until(values):
                return values
            if time.monotonic() - started > timeout_seconds:
                raise LabError(
                    f"{expr!r} still {values} after {timeout_seconds:.0f}s; targets: "
                    f"{self.target_health()}"
                )
            time.sleep(0.5)

    def target_health(self) -> list[tuple[str, str, str]]:
        """(job, health, last error) per active target, for error messages."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            active = json.load(response)["data"]["activeTargets"]
        return [(t["labels"].get("job", ""), t["health"], t["lastError"]) for t in active]


def start_live_prometheus(
    targets: Sequence[ScrapeTarget],
    workdir: Path,
    *,
    interval_seconds: float = 1.0,
    retention: str = "1d",
) -> LivePrometheus:
    """Prometheus scraping `targets` every `interval_seconds` into a fresh TSDB in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, interval_seconds), sort_keys=False))
    port = free_port()
    address = f"127.0.0.1:{port}"
    argv = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        # Always explicit: retention counts from the newest block (see STACK-NOTES).
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={address}",
    ]
    live = start_process(
        "prometheus",
        argv,
        workdir,
        address=address,
        ready=lambda: http_ok(f"http://{address}/-/ready"),
    )
    return LivePrometheus(live.name, live.process, live.log_path, live.address, live.stop_signal)
