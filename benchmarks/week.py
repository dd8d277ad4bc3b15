"""Issue 12's scale figure: a 7-day window over 1,000 series, and the run's peak memory.

A real Prometheus is backfilled (promtool) with ``process_resident_memory_bytes`` of 1,000
instances of one service, a sample every 5 minutes over 8 days (the 7-day window and its
baseline a day earlier); one instance leaks. Then ``workbook run high-memory --lookback 7d``
runs as a user types it, and the memory of its whole process tree (the command, its kernel
and the kernel's two chart drawers) is sampled every 20 ms. Printed: the peak of the pages
resident for the whole run, each counted once (the union of the processes' page frames, read
from /proc/PID/pagemap: root only), the peak of the sum of their PSS (a page the kernel shares
with its drawers counted once, a page shared with other programs in part) and of their RSS
(every process's pages, shared or not), each process's peak RSS, the wall time, the step the
run chose, the most points any series got, and what the run concluded.

``--limit MB`` runs the command in a memory cgroup held to MB (root, cgroup v1 or v2): the
kernel then reclaims or kills as a container's limit would. The cgroup's own peak is printed
too; it counts page cache (the files the run wrote, and the libraries it read that no other
process had cached), which is reclaimed before anything is killed, so it may reach the limit
in a run that needs less.

    .venv/bin/python benchmarks/week.py            # goal: peak under 500 MB, ~1,000 points
    .venv/bin/python benchmarks/week.py --limit 500
    .venv/bin/python benchmarks/week.py --series 200 --days 3

Needs the prometheus and promtool binaries (``make system-deps``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from workbooks.synthetic.cgroup import MemoryCgroup
from workbooks.synthetic.demo import demo_alert_path
from workbooks.synthetic.lab import serve_history

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "bench-week"
SAMPLE_SECONDS = 300
MEMORY_GOAL_MB = 500
LEAKING = 637  # not the first, not the last, not the largest at the start


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_history(path: Path, *, series: int, days: int, now: datetime) -> int:
    """1,000 instances' memory as OpenMetrics, series after series; returns the sample count."""
    end = int(now.timestamp()) // SAMPLE_SECONDS * SAMPLE_SECONDS + SAMPLE_SECONDS
    stamps = np.arange(end - (days * 86400 + 3600), end + 1, SAMPLE_SECONDS)
    hours = (stamps - stamps[0]) / 3600.0
    rng = np.random.default_rng(12)
    onset = end - 3 * 3600
    with path.open("w", encoding="utf-8") as out:
        out.write("# HELP process_resident_memory_bytes Resident memory size in bytes.\n")
        out.write("# TYPE process_resident_memory_bytes gauge\n")
        for number in range(series):
            level = 2.0e9 + 6.0e9 * rng.random()  # 2 to 8 GB, steady with a daily swing
            values = level * (1 + 0.05 * np.sin(2 * np.pi * hours / 24 + number))
            values += rng.normal(0, 0.01 * level, len(stamps))
            if number == LEAKING:  # +1.5 GB per hour since three hours ago
                values += np.clip(stamps - onset, 0, None) / 3600 * 1.5e9
            labels = f'{{service="{SERVICE}",instance="api-{number:04d}"}}'
            out.writelines(
                f"process_resident_memory_bytes{labels} {value:.0f} {stamp}\n"
                for value, stamp in zip(values, stamps, strict=True)
            )
        out.write("# EOF\n")
    return series * len(stamps)


def alert_file(path: Path, now: datetime) -> Path:
    payload = json.loads(demo_alert_path("high-memory").read_text(encoding="utf-8"))
    starts = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for alert in payload["alerts"]:
        alert["labels"]["service"] = SERVICE
        alert["startsAt"] = starts
    payload["commonLabels"]["service"] = payload["groupLabels"]["service"] = SERVICE
    payload["groupKey"] = f'{{}}:{{alertname="HighMemoryUsage", service="{SERVICE}"}}'
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT, FRAME = np.uint64(1 << 63), np.uint64((1 << 55) - 1)  # pagemap's bits (proc(5))


def page_frames(pid: int) -> np.ndarray:
    """The physical page frames a process has resident: one per page, shared ones included.

    Without CAP_SYS_ADMIN the kernel gives every frame as 0 (so ``union_readable`` is false).
    """
    with open(f"/proc/{pid}/maps", encoding="ascii") as maps:
        spans = [line.split(maxsplit=1)[0].split("-") for line in maps]
    raw = []
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for start, end in ((int(a, 16), int(b, 16)) for a, b in spans):
            try:  # [vsyscall] lies outside what pagemap can read
                raw.append(os.pread(pagemap.fileno(), (end - start) // PAGE * 8, start // PAGE * 8))
            except OSError:
                continue
    entries = np.frombuffer(b"".join(raw), dtype=np.uint64)
    return entries[(entries & PRESENT) != 0] & FRAME


def distinct(frames: list[np.ndarray]) -> int:
    """How many different frames the processes' lists hold (a flag per frame, not a sort)."""
    every = np.concatenate(frames)
    if not len(every):
        return 0
    flags = np.zeros(int(every.max()) + 1, dtype=np.bool_)
    flags[every] = True
    return int(np.count_nonzero(flags))


def union_readable() -> bool:
    try:
        return bool(page_frames(os.getpid()).any())
    except OSError:
        return False


class PeakMemory:
    """The memory of a process and its descendants, sampled on a thread: their resident pages
    each counted once (when this process may read page frames), the sum of their PSS, which
    counts a page that processes share once (a run's kernel shares its imports with the chart
    drawers it forks) and a page shared with other programs in part, and the sum of their RSS,
    which counts every shared page again in each process."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.root, self.every = psutil.Process(pid), every
        self.union = union_readable()
        self.peak_union = 0
        self.peak_total = 0  # PSS
        self.peak_total_rss = 0
        self.samples = self.union_samples = self._counted_at = 0
        self.peak_by_process: dict[str, int] = {}  # RSS
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = total_rss = 0
            for process in processes:
                try:
                    memory = process.memory_full_info()
                    name = _role(process)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += memory.pss
                total_rss += memory.rss
                self.peak_by_process[name] = max(self.peak_by_process.get(name, 0), memory.rss)
            if self.union and total > self._counted_at * 1.02:  # frames: 10 ms a process
                self._count_pages(processes)
                self._counted_at = total
            self.peak_total = max(self.peak_total, total)
            self.samples += 1
            self.peak_total_rss = max(self.peak_total_rss, total_rss)
            time.sleep(self.every)

    def _count_pages(self, processes: list[psutil.Process]) -> None:
        frames = []
        for process in processes:
            try:
                frames.append(page_frames(process.pid))
            except OSError:  # it ended
                continue
        self.peak_union = max(self.peak_union, distinct(frames) * PAGE)
        self.union_samples += 1

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _role(process: psutil.Process) -> str:
    if "ipykernel" not in " ".join(process.cmdline()):
        return "command"
    depth, parent = 0, process.parent()  # the kernel forks a drawer, which forks the second
    while parent is not None and "ipykernel" in " ".join(parent.cmdline()):
        depth, parent = depth + 1, parent.parent()
    return ("kernel", "drawer", "second drawer")[min(depth, 2)]


def _cgroup(limit_mb: int) -> MemoryCgroup:
    try:
        return MemoryCgroup.create("week", limit_mb)
    except OSError as error:
        raise SystemExit(f"--limit needs a memory cgroup this user may create: {error}") from None


def run_week(
    scratch: Path, *, series: int, days: int, limit_mb: int | None = None
) -> dict[str, Any]:
    """Backfill ``days`` + 1 days of ``series`` series and run over the last ``days``.

    A ``scratch`` that already holds this backfill (``--keep``) is served again as it is.
    With ``limit_mb``, the run's processes are held to it in a memory cgroup.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    done = scratch / f"backfilled-{series}x{days}.json"
    if done.exists():
        earlier = json.loads(done.read_text(encoding="utf-8"))
        now, samples = datetime.fromisoformat(earlier["now"]), earlier["samples"]
    else:
        shutil.rmtree(scratch / "prometheus", ignore_errors=True)
        now = datetime.now(UTC).replace(microsecond=0)
        started = time.perf_counter()
        samples = write_history(scratch / "history.om", series=series, days=days + 1, now=now)
        written = time.perf_counter() - started
        log(f"  week: {samples:,} samples written in {written:.1f} s; backfilling")
    server = serve_history(
        scratch / "history.om", scratch / "prometheus", backfill=not done.exists()
    )
    done.write_text(json.dumps({"now": now.isoformat(), "samples": samples}), encoding="utf-8")
    cgroup = _cgroup(limit_mb) if limit_mb else None
    try:
        log(
            f"  week: promtool {server.backfill_seconds:.1f} s; "
            f"running high-memory --lookback {days}d"
        )
        env = {**os.environ, "WORKBOOKS_ARCHIVE": str(scratch / "archive")}
        # A 7-day query over 1,000 series is 4-6 s of Prometheus's work here, more on a
        # loaded machine just after it started; the run's 10 s default then ends it as
        # "unreachable", and the figure would be that of a run without its data.
        env.setdefault("WORKBOOKS_PROMETHEUS_TIMEOUT", "60")
        env.pop("WORKBOOKS_EVIDENCE_DIR", None)
        command = [sys.executable, "-m", "workbooks", "run", "high-memory", "--json"]
        command += ["--alert", str(alert_file(scratch / "alert.json", now))]
        command += ["--prometheus", server.url, "--lookback", f"{days}d"]
        started = time.perf_counter()
        process = subprocess.Popen(
            cgroup.inside(command) if cgroup else command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        memory = PeakMemory(process.pid)
        stdout, stderr = process.communicate(timeout=900)
        seconds = time.perf_counter() - started
        memory.stop()
        log(
            f"  week: memory sampled {memory.samples} times in {seconds:.1f} s, "
            f"its pages counted at {memory.union_samples} (each time the PSS sum rose 2%)"
        )
        cgroup_mb = cgroup.peak_mb() if cgroup else None
    finally:
        server.stop()
        if cgroup:
            with contextlib.suppress(OSError):  # a process still in it: the error is above
                cgroup.remove()
    if process.returncode not in (0, 1):  # 1: the run failed, and its record says why
        raise RuntimeError(f"workbook run failed ({process.returncode}):\n{stderr}")
    record = json.loads(stdout)
    record = record[0] if isinstance(record, list) else record
    folder = Path(record["path"])
    if record["status"] != "succeeded":
        raise RuntimeError(f"the 7-day run {record['status']}: {record.get('error')}\n{stderr}")
    findings = json.loads((folder / "findings.json").read_text(encoding="utf-8"))
    failed = [f for f in findings.get("findings") or [] if "source" in (f.get("subject") or {})]
    if failed:  # a query not answered: the memory would be that of a run without its data
        raise RuntimeError(f"the 7-day run's source failed: {failed[0]['detail']}")
    manifest = json.loads((folder / "evidence" / "manifest.json").read_text(encoding="utf-8"))
    memory_entries = [e for e in manifest["entries"] if e["name"] == "memory_by_instance"]
    return {
        "series": series,
        "days": days,
        "samples": samples,
        "status": record["status"],
        "seconds": seconds,
        "peak_union_mb": memory.peak_union / 1e6 if memory.union else None,
        "limit_mb": limit_mb,
        "cgroup_peak_mb": cgroup_mb,
        "peak_total_mb": memory.peak_total / 1e6,
        "peak_total_rss_mb": memory.peak_total_rss / 1e6,
        "peak_mb": {name: rss / 1e6 for name, rss in memory.peak_by_process.items()},
        "step_seconds": max(e["step_seconds"] for e in memory_entries),
        "points_per_series": max(e["points"] // max(e["series"], 1) for e in memory_entries),
        "series_answered": max(e["series"] for e in memory_entries),
        "artifact_mb": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6,
        "top_finding": _top(findings),
    }


def _top(findings: Any) -> str:
    items = findings.get("findings") or []
    return f"{items[0]['severity']}: {items[0]['title']}" if items else "(no finding)"


def describe(result: dict[str, Any]) -> str:
    peaks = ", ".join(f"{name} {mb:.0f} MB" for name, mb in sorted(result["peak_mb"].items()))
    if result["peak_union_mb"] is not None:
        peak = f"peak {result['peak_union_mb']:.0f} MB resident for the whole run, each page once"
        peak += f" (goal {MEMORY_GOAL_MB} MB; PSS {result['peak_total_mb']:.0f} MB"
    else:  # page frames need root: PSS is the nearest
        peak = f"peak {result['peak_total_mb']:.0f} MB for the whole run (PSS"
        peak += f"; goal {MEMORY_GOAL_MB} MB"
    if result["limit_mb"]:
        peak += f"; held to {result['limit_mb']} MB in a cgroup, whose charge peaked at "
        peak += f"{result['cgroup_peak_mb']:.0f} MB, page cache included"
    return (
        f"{result['days']}-day window over {result['series_answered']:,} series "
        f"({result['samples']:,} samples in Prometheus): {peak}; the RSS sum "
        f"{result['peak_total_rss_mb']:.0f} MB counts shared pages in every process; "
        f"peak RSS {peaks}), "
        f"{result['seconds']:.1f} s, "
        f"{result['status']}; step {result['step_seconds']} s, at most "
        f"{result['points_per_series']:,} points per series; artifact "
        f"{result['artifact_mb']:.2f} MB; top finding: {result['top_finding']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7, help="the window; the data is a day more")
    parser.add_argument(
        "--keep", type=Path, help="backfill into this folder once and serve it again next time"
    )
    parser.add_argument(
        "--limit", type=int, metavar="MB", help="hold the run to MB in a memory cgroup (root)"
    )
    args = parser.parse_args(argv)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="week-"))
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(scratch / "archive", ignore_errors=True)
    try:
        result = run_week(scratch, series=args.series, days=args.days, limit_mb=args.limit)
    except RuntimeError as error:  # the run failed: its record says why
        print(f"week: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
