"""Real trouble on the host for the infrastructure runbooks: a small tmpfs to fill (by bytes or
by inodes), and processes that burn a CPU core, one of them a "service instance" exporting its
own `process_cpu_seconds_total` through prometheus_client.

    with mounted_tmpfs(tmp_path / "disk", size_bytes=8 << 20, inodes=200) as disk:
        fill_bytes(disk.path, 7 << 20)          # node_filesystem_avail_bytes falls
        fill_files(disk.path, 150)              # node_filesystem_files_free falls

Mounting needs root (CAP_SYS_ADMIN): elsewhere `mounted_tmpfs` raises NotPermittedError, which
the tests turn into a skip that says so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workbooks.synthetic.live import (
    LiveProcess,
    NotPermittedError,
    free_port,
    http_ok,
    start_process,
)

# A child that serves prometheus_client's default registry (its process collector gives
# process_cpu_seconds_total for this very process) and burns one core while BUSY is 1.
_BURNER = """
import sys, time
port, busy = int(sys.argv[1]), sys.argv[2] == "1"
if port:
    from prometheus_client import start_http_server
    start_http_server(port, addr="127.0.0.1")
print("started", flush=True)
while True:
    if busy:
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            pass
    else:
        time.sleep(0.1)
"""


@dataclass(frozen=True)
class Tmpfs:
    """A mounted tmpfs: node_exporter reports it with mountpoint=`path`, fstype=tmpfs."""

    path: Path
    size_bytes: int
    inodes: int


@contextmanager
def mounted_tmpfs(path: Path, *, size_bytes: int = 8 << 20, inodes: int = 256) -> Iterator[Tmpfs]:
    """Mount a tmpfs of `size_bytes` with `inodes` inodes at `path`; unmounted on exit.

    Raises NotPermittedError when this process may not mount (not root, or a container without
    CAP_SYS_ADMIN).
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise NotPermittedError(
            "mounting a tmpfs needs root (CAP_SYS_ADMIN); run the test as root, as CI does"
        )
    options = f"size={size_bytes},nr_inodes={inodes},mode=0755"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise NotPermittedError(
            f"mount -t tmpfs failed ({mounted.stderr.strip()}); the test needs root with "
            "CAP_SYS_ADMIN (a privileged container), as CI has"
        )
    try:
        yield Tmpfs(path, size_bytes, inodes)
    finally:
        unmounted = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if unmounted.returncode != 0:  # a file still open: detach now, freed when closed
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_bytes(folder: Path, total_bytes: int, *, name: str = "fill.bin") -> int:
    """Append up to `total_bytes` to `folder/name`; stops quietly when the disk is full.

    Returns the bytes written. Call again to grow the same file (a log growing steadily).
    """
    chunk = b"\0" * (1 << 16)
    written = 0
    with (folder / name).open("ab") as out:
        while written < total_bytes:
            piece = chunk[: min(len(chunk), total_bytes - written)]
            try:
                out.write(piece)
                out.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            written += len(piece)
    return written


def fill_files(folder: Path, count: int, *, prefix: str = "f") -> int:
    """Create up to `count` empty files in `folder` (each takes an inode, no bytes); stops
    quietly when inodes run out. Returns how many it created."""
    existing = len(list(folder.glob(f"{prefix}*")))
    for created in range(count):
        try:
            (folder / f"{prefix}{existing + created:06d}").touch(exist_ok=False)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return created
    return count


class SteadyFiller:
    """Grows a file by `bytes_per_second` in a background thread, until stopped or full: a
    filesystem filling at a known rate, so the time to full can be checked."""

    def __init__(self, folder: Path, bytes_per_second: int, *, name: str = "growing.log") -> None:
        self.folder = folder
        self.bytes_per_second = bytes_per_second
        self.name = name
        self.written = 0
        self.full = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick_seconds = 0.25
        per_tick = max(1, int(self.bytes_per_second * tick_seconds))
        while not self._stop.wait(tick_seconds):
            wrote = fill_bytes(self.folder, per_tick, name=self.name)
            self.written += wrote
            if wrote < per_tick:
                self.full = True
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> SteadyFiller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_busy_process(workdir: Path, *, name: str = "busy") -> LiveProcess:
    """A process burning one CPU core until stopped, exporting nothing: the "neighbour"."""
    return _start_burner(workdir, name, port=0, busy=True)


def start_service_instance(
    workdir: Path, *, busy: bool = False, name: str = "service-instance", port: int | None = None
) -> LiveProcess:
    """A process serving prometheus_client's /metrics on its own port (its
    process_cpu_seconds_total, process_start_time_seconds, ...), burning one core when `busy`.

    Scrape it with `ScrapeTarget(job, instance.address, {"service": ..., "instance": ...})` so
    its series carry the service's labels; stop it and its `up` falls to 0. Pass `port` to
    start it on a target Prometheus already scrapes (down until then).
    """
    return _start_burner(workdir, name, port=port or free_port(), busy=busy)


def _start_burner(workdir: Path, name: str, *, port: int, busy: bool) -> LiveProcess:
    argv = [sys.executable, "-c", _BURNER, str(port), "1" if busy else "0"]
    address = f"127.0.0.1:{port}" if port else ""
    log_path = workdir / f"{name}.log"

    def ready() -> bool:
        if port:
            return http_ok(f"http://{address}/metrics")
        return log_path.exists() and "started" in log_path.read_text(errors="replace")

    return start_process(name, argv, workdir, address=address, ready=ready)
