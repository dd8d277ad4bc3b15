"""Issue 12's numbers: cold and warm runs against a floor, reading commands, artifact, storm.

Run it with ``make benchmark`` or directly::

    .venv/bin/python benchmarks/speed.py              # median of 3 per row, a table
    .venv/bin/python benchmarks/speed.py --runs 5 --no-storm

``PYTHONPATH=/other/checkout/lib .venv/bin/python benchmarks/speed.py`` measures another
checkout's code (every ``workbook`` process and kernel here inherits the path): that is how
the before/after numbers in docs/performance.md were taken.

What it times, each against the **floor** measured in the same run (a fresh ``python3`` kernel
plus ``import pandas, matplotlib.pyplot`` in it, until the reply). The floor is measured once
before the first row and once after each row; a row's ratio is its median against the floor
beside it, the median of the two samples before the row and the two after it, so on a machine
whose load drifts during the run (a shared one: the floor moved from 1.31 to 1.64 s within an
hour) each row is compared with the floor of its own minutes. The floor line gives the median
of all the samples.

``cold``
    ``workbook demo RUNBOOK`` (and ``workbook replay ID`` of the high-latency run) as a user
    types it: a fresh process, its imports, its kernel, the run, the archive commit. Goal 1.5x.
    Beside the wall time, the CPU time of every process of the run (the command, its kernel,
    the kernel's chart drawers) against the floor's (its kernel, and this process's client),
    on Linux: this process is made the subreaper of its descendants, so the drawers, orphaned
    when their kernel ends, are reaped here and counted. The work a run does, which the load
    of a shared machine moves less than it moves the wall time; on 2 cores the wall time
    cannot go below half of it.
``warm``
    ``workbook serve --workers 2 --prometheus demo`` as a subprocess; the runbook's demo alert
    (a new group key each time) is posted once the service reports its warm kernels ready
    (``/healthz``), and timed until the run is in the archive index. Goal 1.0x.
``reading``
    ``workbook --help``, ``list``, ``show ID``, ``runbooks``: wall time of the process. Goal 0.3 s.
``artifact``
    The largest run folder (notebook, evidence, findings) of the cold runs: a 2-hour window.
``charts``
    ``benchmarks/charts.py``: one chart's ``to_png`` against matplotlib's Agg draw of it.
``week``
    ``benchmarks/week.py``: ``workbook run high-memory --lookback 7d`` on a real Prometheus
    holding 1,000 series; the peak memory of the command, its kernel and the kernel's chart
    drawer (PSS, and the RSS sum). Goal 500 MB.
``storm``
    ``benchmarks/webhook_storm.py``'s storm on the tiny runbook: 500 deliveries (50 groups x 10)
    from 16 client threads, evenly over 30 s: POST latency percentiles, lost runs, drain time.

The machine is shared: absolute seconds move with its load (printed), the ratios to the floor
of the same run much less. Progress goes to stderr, the table to stdout. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from alert_to_artifact import floor_once
from charts import bench_charts
from charts import describe as describe_charts
from cputime import (
    count_descendants_cpu,
    cpu_counted,
    descendants_cpu,
    own_cpu,
    reap_orphans,
)
from webhook_storm import TOKEN, WORKERS, ServiceProcess, bench_storm, wait
from week import describe as describe_week
from week import run_week

from workbooks.archive.store import Archive
from workbooks.synthetic.demo import DEMO_SCENARIOS, demo_alert_path

ROOT = Path(__file__).resolve().parents[1]
READING_GOAL_SECONDS = 0.3
WARM_WORKERS = WORKERS  # what webhook_storm.ServiceProcess starts


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def workbook(*args: str, archive: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """A `workbook` process as a user runs it; (wall seconds, the completed process)."""
    seconds, _, completed = workbook_timed(*args, archive=archive)
    return seconds, completed


def workbook_timed(
    *args: str, archive: Path
) -> tuple[float, float | None, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds of all its processes or None, the completed process)."""
    env = {**os.environ, "WORKBOOKS_ARCHIVE": str(archive)}
    env.pop("WORKBOOKS_EVIDENCE_DIR", None)
    cpu_before = descendants_cpu()
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "workbooks", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    whole = cpu_counted() and reap_orphans()
    cpu = descendants_cpu() - cpu_before if whole else None
    if completed.returncode != 0:
        raise RuntimeError(f"workbook {' '.join(args)} failed:\n{completed.stderr}")
    return elapsed, cpu, completed


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class Floors:
    """The floor samples of a run, one before the first row and one after each row: wall
    seconds, and CPU seconds (the kernel's and this process's client's) where counted."""

    def __init__(self) -> None:
        floor_once()  # warm-up, not counted
        self.samples: list[float] = []
        self.cpu: list[float | None] = []
        self._measure()

    def _measure(self) -> None:
        # The floor's kernel has no children, and jupyter_client reaps it at its shutdown.
        children, own = descendants_cpu(), own_cpu()
        self.samples.append(floor_once())
        used = descendants_cpu() - children + own_cpu() - own
        self.cpu.append(used if cpu_counted() else None)

    def after_row(self) -> int:
        """Measure the floor after a row; the sample's number, for :meth:`beside`."""
        self._measure()
        return len(self.samples) - 1

    def beside(self, after: int, *, cpu: bool = False) -> float | None:
        """The floor of the row before sample ``after``: the median of the two samples before
        the row and the two after it (one sample is as noisy as one run)."""
        if cpu:
            near = self.cpu[max(after - 2, 0) : after + 2]
            return None if None in near else median([value or 0.0 for value in near])
        return median(self.samples[max(after - 2, 0) : after + 2])


def bench_cold(runbooks: list[str], runs: int, archive: Path, floors: Floors) -> dict[str, Any]:
    results: dict[str, Any] = {
        "times": {},
        "cpu": {},
        "artifact_bytes": {},
        "run_ids": {},
        "floor_after": {},
    }
    workbook("demo", runbooks[0], "--json", archive=archive)  # warm-up: disk caches, bytecode
    for name in runbooks:
        samples, cpu = [], []
        for _ in range(runs):
            seconds, used, completed = workbook_timed("demo", name, "--json", archive=archive)
            record = json.loads(completed.stdout)
            record = record[0] if isinstance(record, list) else record
            samples.append(seconds)
            cpu.append(used)
            results["run_ids"][name] = record["run_id"]
            size = folder_bytes(Path(record["path"]))
            results["artifact_bytes"][name] = max(results["artifact_bytes"].get(name, 0), size)
            spent = f", {used:.2f} s of CPU" if used is not None else ""
            log(f"  cold demo {name}: {seconds:.2f} s{spent} {record['status']}")
        results["times"][f"demo {name}"] = samples
        results["cpu"][f"demo {name}"] = cpu
        results["floor_after"][f"demo {name}"] = floors.after_row()
    if "high-latency" in results["run_ids"]:
        samples, cpu = [], []
        for _ in range(runs):
            run_id = results["run_ids"]["high-latency"]
            seconds, used, _ = workbook_timed("replay", run_id, archive=archive)
            samples.append(seconds)
            cpu.append(used)
            log(f"  cold replay high-latency: {seconds:.2f} s")
        results["times"]["replay high-latency"] = samples
        results["cpu"]["replay high-latency"] = cpu
        results["floor_after"]["replay high-latency"] = floors.after_row()
    return results


def bench_reading(run_id: str, runs: int, archive: Path) -> dict[str, list[float]]:
    commands = {
        "--help": ("--help",),
        "list": ("list",),
        "show ID": ("show", run_id),
        "runbooks": ("runbooks",),
    }
    return {
        label: [workbook(*args, archive=archive)[0] for _ in range(runs)]
        for label, args in commands.items()
    }


def bench_warm(
    runbooks: list[str], runs: int, scratch: Path, floors: Floors
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Each runbook's times, and the floor sample after each (measured while the service is
    idle, its warm kernels ready)."""
    archive = scratch / "warm" / "archive"
    service = ServiceProcess(archive, notebooks=None, prometheus="demo")
    times: dict[str, list[float]] = {}
    after: dict[str, int] = {}
    try:
        for name in ["warm-up", *runbooks]:
            alert = demo_alert_path(name if name != "warm-up" else runbooks[0])
            payload = json.loads(alert.read_text(encoding="utf-8"))
            for number in range(1 if name == "warm-up" else runs):
                wait_for_warm_kernels(service.url)
                payload["groupKey"] = f'{{}}:{{bench="{name}-{number}"}}'
                seconds = post_and_wait(service.url, archive, payload)
                log(f"  warm {name}: {seconds:.2f} s")
                if name != "warm-up":
                    times.setdefault(name, []).append(seconds)
            if name != "warm-up":
                wait_for_warm_kernels(service.url)
                after[name] = floors.after_row()
    finally:
        service.stop()
        if cpu_counted():  # the drawers of the service's kernels, orphaned to this process
            reap_orphans()
    return times, after


def wait_for_warm_kernels(url: str) -> None:
    """Until the service says its kernels are ready (a service without a pool: 3 s idle)."""

    def ready() -> bool:
        health = requests.get(f"{url}/healthz", timeout=5).json()
        return health.get("warm_kernels", WARM_WORKERS) >= WARM_WORKERS

    if "warm_kernels" not in requests.get(f"{url}/healthz", timeout=5).json():
        time.sleep(3)
        return
    wait(ready, 120, "warm kernels", every=0.1)


def post_and_wait(url: str, archive: Path, payload: dict[str, Any]) -> float:
    before = len(Archive(archive).runs(limit=10_000))
    started = time.perf_counter()
    response = requests.post(
        f"{url}/alerts", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    response.raise_for_status()
    wait(lambda: len(Archive(archive).runs(limit=10_000)) > before, 600, "the run", every=0.02)
    return time.perf_counter() - started


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per row")
    parser.add_argument("--runbooks", nargs="*", default=sorted(DEMO_SCENARIOS))
    parser.add_argument("--no-storm", action="store_true", help="skip the webhook storm")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm service runs")
    parser.add_argument(
        "--no-week", action="store_true", help="skip the 7-day, 1,000-series run (about 2 min)"
    )
    args = parser.parse_args(argv)
    # The package's bytecode, as any machine that writes it has after one run: with
    # PYTHONDONTWRITEBYTECODE (containers, CI) every process would compile the package again,
    # 0.15-0.3 s each, while pandas and matplotlib load from the bytecode pip wrote.
    compileall.compile_dir(str(Path(__import__("workbooks").__file__).parent), quiet=1)
    load_start = os.getloadavg()[0]
    counted = count_descendants_cpu()
    scratch = Path(tempfile.mkdtemp(prefix="speed-"))
    try:
        log("floor")
        floors = Floors()
        cold = bench_cold(args.runbooks, args.runs, scratch / "cold" / "archive", floors)
        warm, warm_floor_after = ({}, {})
        if not args.no_warm:
            warm, warm_floor_after = bench_warm(args.runbooks, args.runs, scratch, floors)
        first = next(iter(cold["run_ids"].values()))
        reading = bench_reading(first, max(args.runs, 5), scratch / "cold" / "archive")
        chart_rows = bench_charts(max(args.runs, 10))
        storm = None
        if not args.no_storm:  # the storm: 500 deliveries from 16 clients over 30 s
            storm = bench_storm(scratch, groups=50, copies=10, threads=16, spread_seconds=30)
        week = None if args.no_week else run_week(scratch / "week", series=1000, days=7)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if counted:  # what the storm's and the 7-day run's kernels left orphaned here
            reap_orphans()
    floor = floors.samples
    print(
        f"issue 12 benchmark: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"load (1 min) {load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
        f"median of {args.runs} per row"
    )
    print(f"code measured: {__import__('workbooks').__file__}")
    print(
        f"floor: kernel start + `import pandas, matplotlib.pyplot`: median {median(floor):.2f} s "
        f"(min {min(floor):.2f}, max {max(floor):.2f}, {len(floor)} runs: before the first row "
        "and after each); a row's ratio is against the floor beside it (floor_s)"
    )
    if counted and None not in floors.cpu:
        print(
            f"floor CPU (its kernel and this process's client): median "
            f"{median([value or 0.0 for value in floors.cpu]):.2f} s; a cold row's cpu_s is "
            "the CPU time of all its processes (command, kernel, chart drawers), cpu_ratio "
            "against the floor's CPU beside it (no goal: on 2 cores the wall time cannot go "
            "below half the CPU time)"
        )
    rows = [
        ("what", "median_s", "min_s", "max_s", "floor_s", "ratio", "goal", "cpu_s", "cpu_ratio")
    ]
    for label, samples in cold["times"].items():
        after = cold["floor_after"][label]
        cpu = _cpu_cells(cold["cpu"][label], floors.beside(after, cpu=True))
        rows.append(_row(f"cold  {label}", samples, floors.beside(after), "1.5x", cpu))
    for name, samples in warm.items():
        beside = floors.beside(warm_floor_after[name])
        rows.append(_row(f"warm  serve {name}", samples, beside, "1.0x"))
    for label, samples in reading.items():
        rows.append(_row(f"read  workbook {label}", samples, None, f"{READING_GOAL_SECONDS} s"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    print("\n".join(describe_charts(chart_rows)))
    for name, size in cold["artifact_bytes"].items():
        print(f"artifact with evidence, {name}, 2-hour window: {size / 1e6:.2f} MB (goal 1 MB)")
    if week is not None:
        print(describe_week(week))
    if storm is not None:
        print(
            f"storm: {storm['deliveries']} deliveries from 16 clients over "
            f"{storm['spread_seconds']:g} s, POST p50/p99/max "
            f"{storm['p50_ms']:.0f}/{storm['p99_ms']:.0f}/{storm['max_ms']:.0f} ms (goal p99 "
            f"50 ms), {storm['deliveries_per_second']:.0f}/s accepted, all {storm['groups']} "
            f"runs archived (none lost) {storm['storm_drain_seconds']:.1f} s after the first post"
        )
    return 0


def _cpu_cells(samples: list[float | None], floor: float | None) -> tuple[str, str]:
    if None in samples or not samples:
        return ("-", "-")
    used = median([value or 0.0 for value in samples])
    return (f"{used:.2f}", f"{used / floor:.2f}x" if floor else "-")


def _row(
    label: str,
    samples: list[float],
    floor: float | None,
    goal: str,
    cpu: tuple[str, str] = ("-", "-"),
) -> tuple[str, ...]:
    ratio = f"{median(samples) / floor:.2f}x" if floor else "-"
    return (
        label,
        f"{median(samples):.2f}",
        f"{min(samples):.2f}",
        f"{max(samples):.2f}",
        f"{floor:.2f}" if floor else "-",
        ratio,
        goal,
        *cpu,
    )


if __name__ == "__main__":
    sys.exit(main())
