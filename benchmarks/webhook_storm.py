"""Webhook storm: how `workbook serve` answers, drains and grows under an alert storm.

    .venv/bin/python benchmarks/webhook_storm.py                 # the table
    .venv/bin/python benchmarks/webhook_storm.py --groups 100 --copies 10 --threads 32

Four measurements, each on a fresh archive in a temporary folder:

``storm``
    The service as a real subprocess (``python -m workbooks serve``, 2 worker threads, the
    tiny test runbook ``tests/notebooks/service/svc-echo``). ``--groups`` alert groups of 8
    alerts, each delivery posted ``--copies`` times, shuffled, by ``--threads`` client threads
    with keep-alive: the response time of ``POST /alerts`` while the workers run the queued
    workbooks on the same cores, and how long until every group's run is archived.
``latency``
    Alert to archived artifact through the same idle service: one new group posted, the time
    until its run is in the archive index. The tiny runbook, then ``high-latency`` on its
    bundled demo evidence (a second service with the project's runbooks, ``--prometheus demo``).
``drain``
    Runs drained per minute by 2 workers, threads (what ``serve`` uses) against huey's forked
    processes: the queue is filled first, then the workers start, in this process.
``memory``
    Peak RSS (``VmHWM`` in ``/proc/PID/status``) of the service process after the storm (its
    worker threads included), of the largest notebook kernel seen meanwhile (sampled every
    0.1 s), and of one forked worker process of the ``drain`` measurement.

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from workbooks.archive.store import Archive
from workbooks.core.config import Config, ServiceSettings
from workbooks.service.app import Service
from workbooks.service.intake import Intake

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "notebooks" / "service"
DEMO_ALERT = ROOT / "lib" / "workbooks" / "demo" / "high-latency" / "alert.json"
TOKEN = "benchmark-token"
WORKERS = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process, in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class KernelWatch:
    """Samples the peak RSS of every process below ``pid`` (the notebook kernels)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(0.1):
            for child in descendants(self.pid):
                # Only after exec: a child between fork and exec reports its parent's peak.
                if _is_kernel(child):
                    self.peak = max(self.peak, peak_rss_mib(child))

    def close(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.peak


class ServiceProcess:
    def __init__(self, archive: Path, *, notebooks: Path | None, prometheus: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "WORKBOOKS_WEBHOOK_TOKEN": TOKEN, "WORKBOOKS_EVIDENCE_DIR": "off"}
        env.pop("WORKBOOKS_NOTEBOOKS", None)
        if notebooks is not None:
            env["WORKBOOKS_NOTEBOOKS"] = str(notebooks)
        command = [sys.executable, "-m", "workbooks", "--archive", str(archive), "serve"]
        command += ["--port", self.url.rsplit(":", 1)[1], "--workers", str(WORKERS)]
        command += ["--prometheus", prometheus]
        self.log_path = archive.parent / "service.log"
        archive.mkdir(parents=True)
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        wait(lambda: self._healthy(), 60, "the service")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the service exited:\n{self.log_path.read_text()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not done after {timeout:g} s")


def delivery(group: int, *, prefix: str = "storm") -> dict[str, Any]:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "EchoAlert", "service": f"{prefix}-{group}", "i": str(i)},
            "annotations": {"summary": "storm"},
            "startsAt": "2026-11-28T14:05:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{prefix}-{group}-{i}",
        }
        for i in range(8)
    ]
    return {
        "version": "4",
        "status": "firing",
        "receiver": "workbooks",
        "groupKey": f'{{}}:{{service="{prefix}-{group}"}}',
        "alerts": alerts,
    }


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def archived(archive: Path) -> int:
    return len(Archive(archive).runs()) if (archive / "index.sqlite").exists() else 0


def bench_storm(
    scratch: Path, groups: int, copies: int, threads: int, spread_seconds: float = 0.0
) -> dict[str, float]:
    """``groups`` x ``copies`` deliveries from ``threads`` clients, as fast as they go, or at an
    even pace over ``spread_seconds`` (delivery i is posted i x spread / n after the first)."""
    archive = scratch / "storm" / "archive"
    service = ServiceProcess(archive, notebooks=TINY, prometheus="demo")
    try:
        return _storm(service, archive, groups, copies, threads, spread_seconds)
    finally:
        service.stop()


def _storm(
    service: ServiceProcess,
    archive: Path,
    groups: int,
    copies: int,
    threads: int,
    spread_seconds: float,
) -> dict[str, float]:
    kernels = KernelWatch(service.process.pid)
    payloads = [delivery(group) for group in range(groups) for _ in range(copies)]
    random.Random(0).shuffle(payloads)
    local = threading.local()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    interval = spread_seconds / len(payloads)

    def post(item: tuple[int, dict[str, Any]]) -> float:
        number, payload = item
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps(payload)
        time.sleep(max(0.0, first + number * interval - time.monotonic()))
        started = time.perf_counter()
        response = session.post(f"{service.url}/alerts", data=body, headers=headers, timeout=30)
        elapsed = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code}: {response.text}")
        return elapsed

    pace = f"over {spread_seconds:g} s" if spread_seconds else "as fast as they go"
    log(f"storm: {len(payloads)} deliveries of {groups} groups from {threads} threads, {pace}")
    started = first = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        latencies = list(pool.map(post, enumerate(payloads)))
    posted = time.monotonic() - started
    wait(lambda: archived(archive) >= groups, 1800, "the storm's runs")
    drained = time.monotonic() - started
    time.sleep(1)
    assert archived(archive) == groups, "a group ran twice"

    log("latency: tiny runbook through the idle service")
    tiny = [alert_to_artifact(service.url, archive, delivery(1000 + n)) for n in range(5)]
    result = {
        "deliveries": len(payloads),
        "groups": groups,
        "spread_seconds": spread_seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "deliveries_per_second": len(payloads) / posted,
        "storm_drain_seconds": drained,
        "storm_runs_per_minute": groups / drained * 60,
        "tiny_latency_seconds": statistics.median(tiny),
        "service_rss_mib": peak_rss_mib(service.process.pid),
        "kernel_rss_mib": kernels.close(),
    }
    return result


def alert_to_artifact(url: str, archive: Path, payload: dict[str, Any]) -> float:
    before = archived(archive)
    started = time.monotonic()
    response = requests.post(
        f"{url}/alerts", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    response.raise_for_status()
    wait(lambda: archived(archive) > before, 600, "the run")
    return time.monotonic() - started


def bench_demo_latency(scratch: Path, runs: int) -> float:
    archive = scratch / "demo" / "archive"
    service = ServiceProcess(archive, notebooks=None, prometheus="demo")
    payload = json.loads(DEMO_ALERT.read_text())
    timings = []
    try:
        for number in range(runs + 1):  # the first one warms the kernel's imports up
            payload["groupKey"] = f'{{}}:{{bench="{number}"}}'
            timings.append(alert_to_artifact(service.url, archive, payload))
            log(f"latency: high-latency on demo evidence, {timings[-1]:.1f} s")
    finally:
        service.stop()
    return statistics.median(timings[1:])


def bench_drain(
    scratch: Path, worker_type: str, notebooks: Path | None, payloads: list[dict[str, Any]]
) -> tuple[float, float]:
    """(runs per minute, peak RSS MiB of one worker process or 0 for threads)."""
    archive = scratch / f"drain-{worker_type}-{len(payloads)}" / "archive"
    config = Config(
        archive=str(archive),
        notebooks=str(notebooks) if notebooks else None,
        service=ServiceSettings(dedup_window_seconds=0),
    )
    filler = Service(config=config, archive_dir=archive, source="demo", workers=0)
    from workbooks.core.alert import parse_alert_group
    from workbooks.service.intake import plan

    for payload in payloads:
        for decision in filler.intake.accept(
            plan(parse_alert_group(payload), filler.runbooks()), source="demo"
        ):
            assert decision.run is not None
            filler.queue.enqueue(decision.run)
    workers = Service(
        config=config,
        archive_dir=archive,
        source="demo",
        workers=WORKERS,
        worker_type=worker_type,  # type: ignore[arg-type]
    )
    intake = Intake.in_archive(archive, dedup_window_seconds=0)
    started = time.monotonic()
    workers.start()
    try:
        return _drain(workers, intake, worker_type, len(payloads), started)
    finally:
        workers.stop()


def _drain(
    workers: Service, intake: Intake, worker_type: str, count: int, started: float
) -> tuple[float, float]:
    def finished() -> bool:
        counts = intake.counts()
        return counts["succeeded"] + counts["failed"] >= count

    # Polled slowly: thread workers share this process, and its GIL, with the polling.
    wait(finished, 1800, "drain", every=0.25)
    seconds = time.monotonic() - started
    rss = max((peak_rss_mib(pid) for pid in _worker_processes()), default=0.0)
    failed = intake.counts()["failed"]
    log(f"drain: {count} runs, {worker_type} workers, {seconds:.1f} s, {failed} failed")
    return count / seconds * 60, rss


def _is_kernel(pid: int) -> bool:
    try:
        return b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _worker_processes() -> list[int]:
    # huey's forked workers: the processes below us that are not notebook kernels.
    return [pid for pid in descendants(os.getpid()) if not _is_kernel(pid)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=60, help="alert groups in the storm")
    parser.add_argument("--copies", type=int, default=10, help="copies of each delivery")
    parser.add_argument("--threads", type=int, default=32, help="client threads")
    parser.add_argument(
        "--spread", type=float, default=0.0, help="post evenly over this many seconds (0: burst)"
    )
    parser.add_argument("--demo-runs", type=int, default=3, help="high-latency latency runs")
    parser.add_argument("--drain-runs", type=int, default=30, help="tiny runs to drain")
    parser.add_argument("--drain-demo-runs", type=int, default=8, help="high-latency runs")
    args = parser.parse_args(argv)
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("huey").setLevel(logging.CRITICAL)
    os.environ["WORKBOOKS_EVIDENCE_DIR"] = "off"
    load = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="webhook-storm-"))
    try:
        storm = bench_storm(scratch, args.groups, args.copies, args.threads, args.spread)
        demo = bench_demo_latency(scratch, args.demo_runs)
        demo_payload = json.loads(DEMO_ALERT.read_text())
        tiny = [delivery(n, prefix="drain") for n in range(args.drain_runs)]
        demos = [
            {**demo_payload, "groupKey": f'{{}}:{{drain="{n}"}}'}
            for n in range(args.drain_demo_runs)
        ]
        drains = {
            (kind, worker_type): bench_drain(scratch, worker_type, notebooks, payloads)
            for kind, notebooks, payloads in (("tiny", TINY, tiny), ("high-latency", None, demos))
            for worker_type in ("thread", "process")
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [
        (
            f"POST /alerts p50 / p90 / p99 / max, {storm['deliveries']} deliveries "
            f"({args.threads} threads) while 2 workers run",
            f"{storm['p50_ms']:.0f} / {storm['p90_ms']:.0f} / {storm['p99_ms']:.0f} / "
            f"{storm['max_ms']:.0f} ms",
        ),
        ("deliveries accepted per second", f"{storm['deliveries_per_second']:.0f}"),
        (
            f"storm: {storm['groups']} runs archived after the first post",
            f"{storm['storm_drain_seconds']:.1f} s ({storm['storm_runs_per_minute']:.0f} runs/min)",
        ),
        (
            "alert to archived artifact, tiny runbook (median of 5)",
            f"{storm['tiny_latency_seconds']:.2f} s",
        ),
        (
            f"alert to archived artifact, high-latency, demo evidence (median of {args.demo_runs})",
            f"{demo:.2f} s",
        ),
    ]
    for (kind, worker_type), (per_minute, _) in drains.items():
        rows.append(
            (f"runs drained per minute, {kind}, 2 {worker_type} workers", f"{per_minute:.0f}")
        )
    rows += [
        (
            "peak RSS, service process with its 2 worker threads",
            f"{storm['service_rss_mib']:.0f} MiB",
        ),
        ("peak RSS, largest notebook kernel (tiny runbook)", f"{storm['kernel_rss_mib']:.0f} MiB"),
        (
            "peak RSS, one forked worker process (high-latency drain)",
            f"{drains['high-latency', 'process'][1]:.0f} MiB",
        ),
    ]
    python = platform.python_version()
    print(
        f"webhook storm: {os.cpu_count()} cores, Python {python}, "
        f"load {load:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
