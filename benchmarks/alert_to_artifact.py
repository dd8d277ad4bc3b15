"""Alert to archived artifact: wall time per runbook, on demo evidence and on a real Prometheus.

Run it with ``make benchmark`` (it runs ``.venv/bin/python benchmarks/alert_to_artifact.py``),
or directly::

    .venv/bin/python benchmarks/alert_to_artifact.py             # median of 5, a table
    .venv/bin/python benchmarks/alert_to_artifact.py --runs 9    # median of 9
    .venv/bin/python benchmarks/alert_to_artifact.py --json      # the numbers as JSON
    .venv/bin/python benchmarks/alert_to_artifact.py --prometheus-only --latency-ms 50 \
        --runbooks high-error-rate database-issues                # a remote Prometheus

For each runbook with a bundled demo (``workbooks.synthetic.demo.DEMO_SCENARIOS``) it times the
whole ``workbooks.running.runner.run_alert`` call, from parsing the webhook payload to the
archive commit returning, in two modes:

``demo``
    ``source="demo"``: the bundled evidence stands in for Prometheus (offline).
``prometheus``
    A real Prometheus (Debian's ``prometheus`` and ``promtool``), one per runbook,
    backfilled with the runbook's demo scenario by ``workbooks.synthetic.lab.start_prometheus``;
    ``WORKBOOKS_NOW`` is pinned to the end of the scenario so the workbook's window matches the
    data. Skipped, with a message, when the binaries are missing. ``--latency-ms 50`` puts a
    proxy in front of it that holds each request 50 ms, as a Prometheus across a network would.

Each is compared with a **floor** measured in the same process: a fresh ``python3`` kernel
started with jupyter_client plus ``import pandas, matplotlib.pyplot`` executed in it, until the
reply comes back. ``ratio`` is a median over the floor's median.

Each mode, and the floor, gets one warm-up run first that is not counted.
``workbooks.running.runner`` (papermill, nbclient) is imported before any timing, and its import
time is reported on its own: a one-shot process such as ``workbook run`` pays it on top of the
times below.

The Prometheus-mode warm-up runs on the first runbook's server; each other runbook's first
counted run is the first query its fresh Prometheus answers (the per-run samples are in
``--json``). The header gives the 1-minute load average at start and end: on a shared machine,
other work skews the numbers.

Progress goes to stderr; stdout holds only the table (or the JSON). The exit status is 1 if any
run failed, or if the top findings of a runbook's runs disagree (a run that saw no data is
not comparable), else 0; the numbers are printed all the same. Prometheus is stopped and
the temporary archives removed on any exit, including Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel

from workbooks.archive.store import Archive, RunRecord
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config, load_config
from workbooks.synthetic.demo import DEMO_SCENARIOS, demo_alert_path
from workbooks.synthetic.lab import prometheus_available, relay, start_prometheus

FLOOR_CODE = "import pandas, matplotlib.pyplot"
KERNEL_NAME = "python3"
KERNEL_REPLY_TIMEOUT_SECONDS = 120.0
NOW_ENV = "WORKBOOKS_NOW"

OneRun = Callable[[], tuple[float, RunRecord]]


@dataclass
class Timing:
    """The wall times of one measured thing, in seconds, in the order they ran."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


@dataclass
class RunbookResult:
    """One runbook in one mode: its timings and what the runs found."""

    runbook: str
    mode: str
    timing: Timing
    statuses: list[str]
    top_findings: list[str | None]
    errors: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return all(status == "succeeded" for status in self.statuses)


@dataclass
class Report:
    machine: dict[str, Any]
    runs: int
    runner_import_seconds: float
    floor: Timing
    warmups: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[RunbookResult] = field(default_factory=list)
    prometheus_servers: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    prometheus = None
    if shutil.which("prometheus"):
        completed = subprocess.run(
            ["prometheus", "--version"], capture_output=True, text=True, check=False
        )
        # "prometheus, version 2.42.0+ds (branch: ..., revision: ...)"
        text = completed.stdout or completed.stderr
        prometheus = text.partition("version ")[2].split(" ", 1)[0] or None
    return {
        "nproc": os.cpu_count(),
        "loadavg_1min_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "papermill": metadata.version("papermill"),
        "platform": platform.platform(),
        "prometheus": prometheus,
    }


# -- the floor ------------------------------------------------------------------------------------


def floor_once() -> float:
    """A fresh kernel, then ``FLOOR_CODE`` in it, until its reply; the shutdown is not timed."""
    started = time.perf_counter()
    manager, client = start_new_kernel(
        kernel_name=KERNEL_NAME, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        reply = client.execute_interactive(
            FLOOR_CODE,
            timeout=KERNEL_REPLY_TIMEOUT_SECONDS,
            output_hook=lambda message: None,  # nothing is printed; keep stdout clean
        )
        elapsed = time.perf_counter() - started
        if reply["content"]["status"] != "ok":
            content = reply["content"]
            raise RuntimeError(f"{FLOOR_CODE!r} failed in the kernel: {content.get('evalue')}")
        return elapsed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


# -- alert to artifact ----------------------------------------------------------------------------


@contextmanager
def pinned_now(moment: str) -> Iterator[None]:
    """``WORKBOOKS_NOW`` set in this process (the kernel inherits it), restored afterwards."""
    saved = os.environ.get(NOW_ENV)
    os.environ[NOW_ENV] = moment
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(NOW_ENV, None)
        else:
            os.environ[NOW_ENV] = saved


@contextmanager
def delayed(upstream: str, latency: float) -> Iterator[str]:
    """A URL that answers as ``upstream`` does, each request held ``latency`` seconds first (a
    Prometheus across a network); ``upstream`` itself when there is no latency."""
    if latency <= 0:
        yield upstream
        return
    with relay(upstream, delay=latency) as server:
        yield server.url


def alert_to_artifact(
    runbook: str, payload: str, *, config: Config, archive: Archive, source: str
) -> tuple[float, RunRecord]:
    """One run: parse the alert, run the workbook, archive it. Returns (seconds, the record)."""
    from workbooks.running.runner import run_alert  # imported (and timed) once in main()

    started = time.perf_counter()
    group = parse_alert_group(json.loads(payload))
    records = run_alert(group, config=config, archive=archive, source=source, runbook_id=runbook)
    elapsed = time.perf_counter() - started
    if len(records) != 1:
        raise RuntimeError(f"expected one run for {runbook}, got {len(records)}")
    return elapsed, records[0]


def measure_runbook(runbook: str, mode: str, runs: int, one_run: OneRun) -> RunbookResult:
    result = RunbookResult(runbook, mode, Timing([]), [], [])
    for index in range(runs):
        seconds, record = one_run()
        result.timing.samples.append(seconds)
        result.statuses.append(record.status)
        result.top_findings.append(record.top_finding_title)
        if record.error:
            result.errors.append(record.error.get("message", str(record.error)))
        log(f"  {mode:<10} {runbook:<14} run {index + 1}/{runs}: {seconds:.2f} s {record.status}")
    return result


def warm_up(report: Report, mode: str, runbook: str, one_run: OneRun) -> None:
    seconds, record = one_run()
    report.warmups[mode] = {"runbook": runbook, "seconds": seconds, "status": record.status}
    log(f"  {mode:<10} {runbook:<14} warm-up: {seconds:.2f} s {record.status} (not counted)")


def bench_demo(report: Report, runbooks: list[str], config: Config, scratch: Path) -> None:
    mode = "demo"
    archive = Archive(scratch / "archive-demo")
    payloads = {name: demo_alert_path(name).read_text(encoding="utf-8") for name in runbooks}

    def runner(name: str) -> OneRun:
        return lambda: alert_to_artifact(
            name, payloads[name], config=config, archive=archive, source="demo"
        )

    warm_up(report, mode, runbooks[0], runner(runbooks[0]))
    for name in runbooks:
        report.results.append(measure_runbook(name, mode, report.runs, runner(name)))


def bench_prometheus(
    report: Report, runbooks: list[str], config: Config, scratch: Path, *, latency: float = 0.0
) -> None:
    mode = "prometheus"
    if not prometheus_available():
        report.skipped[mode] = (
            "prometheus or promtool not on PATH (Debian package 'prometheus'; "
            "`make system-deps` installs it)"
        )
        log(f"  {mode}: skipped, {report.skipped[mode]}")
        return
    archive = Archive(scratch / "archive-prometheus")
    for position, name in enumerate(runbooks):
        scenario = DEMO_SCENARIOS[name]
        payload = demo_alert_path(name).read_text(encoding="utf-8")
        try:
            server = start_prometheus([scenario], scratch / f"prometheus-{name}")
        except RuntimeError as exc:  # promtool failed, or Prometheus never became ready
            report.skipped[f"{mode} {name}"] = f"Prometheus did not start: {exc}"
            log(f"  {mode:<10} {name:<14} skipped: Prometheus did not start: {exc}")
            continue
        try:
            report.prometheus_servers[name] = {
                "backfill_seconds": server.backfill_seconds,
                "ready_seconds": server.ready_seconds,
            }
            log(
                f"  {mode:<10} {name:<14} Prometheus at {server.url} "
                f"(backfill {server.backfill_seconds:.2f} s, ready {server.ready_seconds:.2f} s)"
            )

            with pinned_now(scenario.end.isoformat()), delayed(server.url, latency) as url:

                def one_run(
                    name: str = name, payload: str = payload, url: str = url
                ) -> tuple[float, RunRecord]:
                    return alert_to_artifact(
                        name, payload, config=config, archive=archive, source=url
                    )

                if position == 0:
                    warm_up(report, mode, name, one_run)
                report.results.append(measure_runbook(name, mode, report.runs, one_run))
        finally:
            server.stop()


# -- output ---------------------------------------------------------------------------------------


def ratio(timing: Timing, floor: Timing) -> float:
    return timing.median / floor.median


def top_findings_agree(report: Report, runbook: str) -> bool:
    """Whether every run of ``runbook``, in every mode, put the same finding on top.

    Both modes read the same incident (the demo evidence was recorded from the same scenario),
    so a different top finding means a run saw something else (no data, an unreachable source)
    and its time is not comparable.
    """
    titles = {
        title
        for result in report.results
        if result.runbook == runbook
        for title in result.top_findings
    }
    return len(titles) == 1


def row_status(report: Report, result: RunbookResult) -> str:
    """``ok``, or why the row's numbers are suspect."""
    failed = sum(status != "succeeded" for status in result.statuses)
    if failed:
        return f"{failed}/{len(result.statuses)} FAILED"
    if not top_findings_agree(report, result.runbook):
        return "CHECK: top finding varies"
    return "ok"


def format_table(report: Report) -> str:
    machine = report.machine
    lines = [
        "alert-to-archived-artifact (whole run_alert call: parse alert .. archive commit)",
        f"machine: nproc {machine['nproc']}, Python {machine['python']}, "
        f"papermill {machine['papermill']}"
        + (f", prometheus {machine['prometheus']}" if machine["prometheus"] else ""),
        f"load average (1 min): {machine['loadavg_1min_start']} at start, "
        f"{machine['loadavg_1min_end']} at end",
        f"runs: median of {report.runs} per row, after one uncounted warm-up run per mode "
        "and one for the floor",
    ]
    for mode, warm in report.warmups.items():
        what = "" if warm["runbook"] == "-" else f"{warm['runbook']} "
        lines.append(
            f"warm-up ({mode}, not counted): {what}{warm['seconds']:.2f} s {warm['status']}"
        )
    lines.append(
        f"import workbooks.running.runner (papermill, nbclient): "
        f"{report.runner_import_seconds:.2f} s, "
        "paid once before timing; a fresh process (the first run, `workbook run`) pays it on top"
    )
    lines.append(
        f"floor: fresh {KERNEL_NAME} kernel start + `{FLOOR_CODE}` until it returns "
        f"(the shutdown not timed)"
    )
    lines.append("")
    header = ("runbook", "mode", "runs", "median_s", "min_s", "max_s", "ratio", "status")
    rows: list[tuple[str, ...]] = [header]
    floor = report.floor
    rows.append(
        ("(floor)", "kernel+import", str(len(floor.samples)), *_numbers(floor, floor), "ok")
    )
    for result in report.results:
        rows.append(
            (
                result.runbook,
                result.mode,
                str(len(result.timing.samples)),
                *_numbers(result.timing, floor),
                row_status(report, result),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    numeric = {2, 3, 4, 5, 6}
    for row in rows:
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append("ratio = median / floor median")
    for name, server in report.prometheus_servers.items():
        lines.append(
            f"prometheus {name}: backfill {server['backfill_seconds']:.2f} s, "
            f"ready {server['ready_seconds']:.2f} s (not timed)"
        )
    for mode, reason in report.skipped.items():
        lines.append(f"{mode}: skipped, {reason}")
    lines.extend(_finding_notes(report))
    return "\n".join(lines)


def _numbers(timing: Timing, floor: Timing) -> tuple[str, str, str, str]:
    return (
        f"{timing.median:.2f}",
        f"{timing.min:.2f}",
        f"{timing.max:.2f}",
        f"{ratio(timing, floor):.2f}",
    )


def _finding_notes(report: Report) -> list[str]:
    """The top finding of each runbook per mode, so a run that saw no data stands out."""
    notes = []
    by_runbook: dict[str, dict[str, set[str | None]]] = {}
    for result in report.results:
        by_runbook.setdefault(result.runbook, {})[result.mode] = set(result.top_findings)
        for error in sorted(set(result.errors)):
            notes.append(f"ERROR {result.mode} {result.runbook}: {error}")
    for runbook, modes in by_runbook.items():
        if top_findings_agree(report, runbook):
            title = next(iter(next(iter(modes.values()))))
            notes.append(f"top finding, {runbook} (every run): {title}")
        else:
            for mode, mode_titles in modes.items():
                shown = " | ".join(sorted(str(title) for title in mode_titles))
                notes.append(f"top finding, {runbook} ({mode}), DIFFERS: {shown}")
    return notes


def to_json(report: Report) -> dict[str, Any]:
    def timing(value: Timing) -> dict[str, Any]:
        return {
            "median_s": value.median,
            "min_s": value.min,
            "max_s": value.max,
            "ratio": ratio(value, report.floor),
            "samples_s": value.samples,
        }

    return {
        "machine": report.machine,
        "runs": report.runs,
        "warmups": {mode: {**warm, "counted": False} for mode, warm in report.warmups.items()},
        "runner_import_seconds": report.runner_import_seconds,
        "floor": {"what": f"{KERNEL_NAME} kernel start + {FLOOR_CODE}", **timing(report.floor)},
        "results": [
            {
                "runbook": result.runbook,
                "mode": result.mode,
                **timing(result.timing),
                "status": row_status(report, result),
                "statuses": result.statuses,
                "top_findings": result.top_findings,
                "errors": result.errors,
            }
            for result in report.results
        ],
        "prometheus_servers": report.prometheus_servers,
        "skipped": report.skipped,
    }


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Alert-to-archived-artifact wall time per runbook, against a kernel floor."
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="measured runs per row (default 5); median of these"
    )
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument(
        "--runbooks",
        nargs="+",
        choices=list(DEMO_SCENARIOS),
        metavar="RUNBOOK",
        help="these only (default: all)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="hold each request to Prometheus this long, as a Prometheus across a network "
        "would (default 0: loopback)",
    )
    parser.add_argument(
        "--prometheus-only", action="store_true", help="skip the demo-evidence rows"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain `kill` then unwinds like Ctrl-C: Prometheus stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    runbooks = args.runbooks or list(DEMO_SCENARIOS)
    config = load_config(env={})

    started = time.perf_counter()
    import workbooks.running.runner  # noqa: F401  (papermill and nbclient: paid once, reported apart)

    runner_import_seconds = time.perf_counter() - started

    log(f"floor: 1 warm-up + {args.runs} runs")
    warm_floor = floor_once()
    log(f"  floor warm-up: {warm_floor:.2f} s (not counted)")
    floor = Timing([])
    for index in range(args.runs):
        floor.samples.append(floor_once())
        log(f"  floor run {index + 1}/{args.runs}: {floor.samples[-1]:.2f} s")

    report = Report(
        machine=machine_info(),
        runs=args.runs,
        runner_import_seconds=runner_import_seconds,
        floor=floor,
    )
    report.warmups["floor"] = {"runbook": "-", "seconds": warm_floor, "status": "ok"}
    scratch = Path(tempfile.mkdtemp(prefix="workbooks-bench-"))
    try:
        if not args.prometheus_only:
            log(f"demo evidence: 1 warm-up + {args.runs} runs per runbook")
            bench_demo(report, runbooks, config, scratch)
        log(f"real Prometheus: 1 warm-up + {args.runs} runs per runbook")
        bench_prometheus(report, runbooks, config, scratch, latency=args.latency_ms / 1000)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.machine["loadavg_1min_end"] = round(os.getloadavg()[0], 2)

    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(format_table(report))
    return 0 if all(row_status(report, result) == "ok" for result in report.results) else 1


if __name__ == "__main__":
    sys.exit(main())
