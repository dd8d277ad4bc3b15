"""A real Prometheus (the Debian package's binary) serving backfilled synthetic scenarios.

For the demo evidence, the benchmarks and the tests: nothing here runs in a workbook.

    server = start_prometheus([make_scenario("high-latency", "slow_route")], tmp_path)
    try:
        server.query('up{service="inference-api"}')
    finally:
        server.stop()

Data ending at, or a few minutes after, "now" is queryable as soon as /-/ready answers: the
blocks promtool writes are opened at start-up and the empty head does not hide them (checked
with Prometheus 2.42 in test_scenarios.py).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from workbooks.synthetic.scenarios import Scenario, write_history

READY_TIMEOUT_SECONDS = 15.0

# No scrape_configs: Prometheus would otherwise scrape itself and its own
# process_resident_memory_bytes would sit beside the synthetic one.
_CONFIG = "global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n"


def prometheus_available() -> bool:
    """Whether the prometheus and promtool binaries are on PATH."""
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


@dataclass
class PrometheusServer:
    """A running Prometheus on 127.0.0.1; `stop()` ends it."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    backfill_seconds: float = 0.0  # promtool create-blocks-from openmetrics
    ready_seconds: float = 0.0  # from process start until /-/ready answered
    promtool_output: str = field(default="", repr=False)

    def stop(self) -> None:
        """Terminate Prometheus and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        """What Prometheus wrote to stdout and stderr so far."""
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def query(self, expr: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """Run an instant query; returns the API's `data.result` list."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        return self._get("/api/v1/query", params)["result"]

    def query_range(
        self, expr: str, start: datetime, end: datetime, step_seconds: float
    ) -> list[dict[str, Any]]:
        """Run a range query; returns the API's `data.result` list."""
        params = {
            "query": expr,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": str(step_seconds),
        }
        return self._get("/api/v1/query_range", params)["result"]

    def series(self, match: str, start: datetime, end: datetime) -> list[dict[str, str]]:
        """The label sets of the series matching `match` that have samples in [start, end]."""
        params = {
            "match[]": match,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
        }
        return self._get("/api/v1/series", params)

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{params}: {exc.read().decode()}") from exc
        return body["data"]


def start_prometheus(scenarios: Sequence[Scenario], workdir: Path) -> PrometheusServer:
    """Backfill `scenarios` into a fresh TSDB under `workdir` and serve it on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    return serve_history(write_history(scenarios, workdir / "history"), workdir)


def serve_history(
    history: Path | Sequence[Path], workdir: Path, *, backfill: bool = True
) -> PrometheusServer:
    """Backfill OpenMetrics files (each ending with ``# EOF``) under `workdir` and serve them.

    Files cut by TSDB block (:func:`write_history`) are backfilled as many at a time as there
    are cores. ``backfill=False`` serves what an earlier call backfilled into the same
    `workdir`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    started = time.monotonic()
    promtool_output = ""
    if backfill:
        files = [history] if isinstance(history, Path) else list(history)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            promtool_output = "".join(pool.map(lambda file: _backfill(file, data), files))
    backfill_seconds = time.monotonic() - started
    config = workdir / "prometheus.yml"
    config.write_text(_CONFIG)
    port = _free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                # Retention counts from the newest block: the default 15d could delete old ones.
                "--storage.tsdb.retention.time=10y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}",
        process=process,
        workdir=workdir,
        backfill_seconds=backfill_seconds,
        promtool_output=promtool_output,
    )
    started = time.monotonic()
    while not _ready(server.url):
        if process.poll() is not None or time.monotonic() - started > READY_TIMEOUT_SECONDS:
            server.stop()
            raise RuntimeError(
                f"Prometheus at {server.url} not ready after {time.monotonic() - started:.1f}s"
                f"\n--- promtool ---\n{promtool_output}\n--- prometheus ---\n{server.log()}"
            )
        time.sleep(0.05)
    server.ready_seconds = time.monotonic() - started
    return server


def _backfill(history: Path, data: Path) -> str:
    """promtool's blocks of one OpenMetrics file, into `data`; what it printed."""
    completed = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(history), str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise RuntimeError(f"promtool failed on {history} ({completed.returncode}):\n{output}")
    return output


def _free_port() -> int:
    # A small race (another process may take the port before Prometheus binds it); a clash
    # shows up as "address already in use" in the not-ready error.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def relay(upstream: str, *, delay: float = 0.0) -> Iterator[Relay]:
    """A server on 127.0.0.1 that passes each GET on to ``upstream`` (a Prometheus), after
    ``delay`` seconds, as a Prometheus across a network would answer; it notes each request."""
    server = Relay(upstream, delay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Relay(http.server.ThreadingHTTPServer):
    """:func:`relay`'s server: ``arrivals`` holds (time.time(), the PromQL) of each request."""

    daemon_threads = True

    def __init__(self, upstream: str, delay: float) -> None:
        self.arrivals: list[tuple[float, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                outer.arrivals.append((time.time(), params.get("query", [""])[0]))
                time.sleep(delay)
                try:
                    with urllib.request.urlopen(upstream + self.path, timeout=60) as answer:
                        status, body = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, body = error.code, error.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
