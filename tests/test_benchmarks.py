"""The benchmark still runs and prints every row of issue 12's table.

Performance is measured by the benchmark, not by timed tests, so nothing here checks a time.
But nothing else runs ``benchmarks/speed.py`` either: a change that breaks it (as the
thirteenth pass broke its chart rows, docs/performance.md) would go unseen until someone
measures. One runbook, one run per row, no storm and no 7-day run: about 20 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"\d+\.\d\d"


def test_the_speed_benchmark_prints_each_row_with_its_ratio_to_the_floor() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--runs", "1"]
    command += ["--runbooks", "high-memory", "--no-storm", "--no-week"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert re.search(rf"^floor: .* median {NUMBER} s", table, re.M), table
    assert re.search(rf"^floor CPU .* median {NUMBER} s", table, re.M), table
    cpu = rf"\s+{NUMBER}\s+{NUMBER}x"  # the run's processes' CPU time, and its ratio
    for row, goal, after in (
        ("cold  demo high-memory", "1.5x", cpu),
        ("warm  serve high-memory", "1.0x", r"\s+-\s+-"),
    ):
        found = rf"^{row}(\s+{NUMBER}){{4}}\s+{NUMBER}x\s+{re.escape(goal)}{after}$"
        assert re.search(found, table, re.M), f"no {row!r} row:\n{table}"
    for reading in ("--help", "list", "show ID", "runbooks"):
        assert re.search(rf"^read  workbook {reading}(\s+{NUMBER}){{3}}\s+-\s+-", table, re.M)
    for kind in ("timeseries", "ranked bars", "no-data placeholder"):
        assert re.search(rf"^chart {kind}.*: to_png \d+ ms = {NUMBER}x the Agg draw", table, re.M)
    assert re.search(
        rf"^artifact with evidence, high-memory, 2-hour window: {NUMBER} MB", table, re.M
    )


ORPHAN = """
import os, time
if os.fork() == 0:  # the parent exits at once; this child spends 0.3 s of CPU, orphaned
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    os._exit(0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a subreaper is Linux's")
def test_a_commands_cpu_time_counts_the_processes_it_leaves_orphaned() -> None:
    """A run's chart drawers outlive its kernel: the benchmark's CPU time must still count
    them. In a process of its own, as a subreaper changes where every orphan goes."""
    measure = (
        f"import subprocess, sys\nsys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from cputime import count_descendants_cpu, descendants_cpu, reap_orphans\n"
        "assert count_descendants_cpu()\n"
        "before = descendants_cpu()\n"
        f"subprocess.run([sys.executable, '-c', {ORPHAN!r}], check=True)\n"
        "at_exit = descendants_cpu() - before\n"
        "assert reap_orphans()\n"
        "print(at_exit, descendants_cpu() - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    at_exit, counted = map(float, done.stdout.split())
    assert at_exit < 0.3  # the command alone: its orphan's CPU is not in it
    assert counted - at_exit >= 0.25  # the orphan's 0.3 s, counted once it is reaped here
