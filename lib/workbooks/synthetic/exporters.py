"""The standard exporters from their Debian packages, started on loopback ports.

node_exporter (host CPU, filesystems, load, memory), postgres_exporter (pointed at a
`PostgresCluster`) and blackbox_exporter (with an http_2xx module, probing a
`SwitchableHttpServer` the test turns to failing). Scrape them with `start_live_prometheus`.
The metric names and labels they export are documented in docs/metrics.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from workbooks.synthetic.live import LabError, LiveProcess, free_port, http_ok, start_process

# Debian's binary names (upstream calls them node_exporter, postgres_exporter, ...).
NODE_EXPORTER = "prometheus-node-exporter"
POSTGRES_EXPORTER = "prometheus-postgres-exporter"
BLACKBOX_EXPORTER = "prometheus-blackbox-exporter"

# What a runbook reads and nothing more, so each scrape stays cheap.
NODE_COLLECTORS = ("cpu", "filesystem", "loadavg", "meminfo")

# Debian's default also excludes /run, /mnt and /media, where a test's tmpfs may well live.
NODE_MOUNT_POINTS_EXCLUDE = "^/(dev|proc|sys|run/credentials/.+)($|/)"

BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
"""


def missing_binaries(
    names: Sequence[str] = (NODE_EXPORTER, POSTGRES_EXPORTER, BLACKBOX_EXPORTER),
) -> list[str]:
    """The binaries among `names` that are not on PATH (a test skips naming them)."""
    return [name for name in names if shutil.which(name) is None]


def binary_version(binary: str) -> str:
    """The version `binary --version` reports, e.g. "1.5.0"; "" when it is not installed."""
    if shutil.which(binary) is None:
        return ""
    completed = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"version (\S+)", completed.stdout + completed.stderr)
    return match.group(1) if match else ""


def start_node_exporter(
    workdir: Path,
    *,
    collectors: Sequence[str] = NODE_COLLECTORS,
    mount_points_exclude: str = NODE_MOUNT_POINTS_EXCLUDE,
) -> LiveProcess:
    """node_exporter with only `collectors`; ready when /metrics answers."""
    address = f"127.0.0.1:{free_port()}"
    argv = [
        NODE_EXPORTER,
        f"--web.listen-address={address}",
        "--collector.disable-defaults",
        *(f"--collector.{name}" for name in collectors),
        f"--collector.filesystem.mount-points-exclude={mount_points_exclude}",
    ]
    return start_process(
        "node-exporter",
        argv,
        workdir,
        address=address,
        ready=lambda: http_ok(f"http://{address}/metrics"),
    )


def start_postgres_exporter(dsn: str, workdir: Path) -> LiveProcess:
    """postgres_exporter with its default collectors, reading the database at `dsn`
    (e.g. `PostgresCluster.dsn`); ready when /metrics answers (pg_up says if it connected)."""
    address = f"127.0.0.1:{free_port()}"
    return start_process(
        "postgres-exporter",
        [POSTGRES_EXPORTER, f"--web.listen-address={address}"],
        workdir,
        address=address,
        env={"DATA_SOURCE_NAME": dsn},
        ready=lambda: http_ok(f"http://{address}/metrics"),
    )


def start_blackbox_exporter(workdir: Path) -> LiveProcess:
    """blackbox_exporter with an `http_2xx` module (IPv4, 2 s timeout); ready when /-/healthy
    answers. Probe through Prometheus with `probe_target(job, exporter.address, url)`."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG)
    address = f"127.0.0.1:{free_port()}"
    return start_process(
        "blackbox-exporter",
        [BLACKBOX_EXPORTER, f"--config.file={config}", f"--web.listen-address={address}"],
        workdir,
        address=address,
        ready=lambda: http_ok(f"http://{address}/-/healthy"),
    )


class SwitchableHttpServer:
    """A tiny HTTP server on 127.0.0.1 answering 200, or `failing_status` once `failing` is set.

    The thing a blackbox probe watches: set `server.failing = True` and probe_success drops to 0.
    """

    def __init__(self, *, failing_status: int = 503) -> None:
        self.failing = False
        self.failing_status = failing_status
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                status = owner.failing_status if owner.failing else 200
                body = b"failing\n" if owner.failing else b"ok\n"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a probe a second would flood the test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        if not http_ok(self.url, timeout_seconds=5):
            self.stop()
            raise LabError(f"the test HTTP server at {self.url} does not answer")

    @property
    def url(self) -> str:
        return f"http://{self.address}/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SwitchableHttpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
