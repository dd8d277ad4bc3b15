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

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"\d+\.\d\d"


def test_the_speed_benchmark_prints_each_row_with_its_ratio_to_the_floor() -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--runs", "1"]
    command += ["--runbooks", "high-memory", "--no-storm", "--no-week"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert re.search(rf"^floor: .* median {NUMBER} s", table, re.M), table
    for row, goal in (("cold  demo high-memory", "1.5x"), ("warm  serve high-memory", "1.0x")):
        found = rf"^{row}(\s+{NUMBER}){{4}}\s+{NUMBER}x\s+{re.escape(goal)}$"
        assert re.search(found, table, re.M), f"no {row!r} row:\n{table}"
    for reading in ("--help", "list", "show ID", "runbooks"):
        assert re.search(rf"^read  workbook {reading}(\s+{NUMBER}){{3}}\s+-\s+-", table, re.M)
    for kind in ("timeseries", "ranked bars", "no-data placeholder"):
        assert re.search(rf"^chart {kind}.*: to_png \d+ ms = {NUMBER}x the Agg draw", table, re.M)
    assert re.search(
        rf"^artifact with evidence, high-memory, 2-hour window: {NUMBER} MB", table, re.M
    )
