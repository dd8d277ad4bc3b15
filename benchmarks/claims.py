"""Intake ledger claims per second, SQLite (the default) against PostgreSQL.

    .venv/bin/python benchmarks/claims.py                    # the table
    .venv/bin/python benchmarks/claims.py --runs 2000 --workers 4

``--runs`` runs are accepted into a fresh ledger, then ``--workers`` processes (spawned, as
workers on other hosts would be) claim all of them, each trying every run (half in order, half
in reverse, so they collide): the claims per second is the number of runs over the wall time
until every run is claimed, and each run must be claimed exactly once. Then one process claims
alone, without contention. SQLite is ``<tmp>/intake.sqlite``; PostgreSQL is a throwaway cluster
started on a loopback port (Debian's ``postgresql``, ``fsync=off`` as in the tests).

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from workbooks.service.intake import Intake, PlannedRun, QueuedRun
from workbooks.synthetic.postgres import postgres_bindir, start_postgres


def planned(n: int) -> PlannedRun:
    return PlannedRun(
        runbook="high-latency",
        incident_id=f"incident-{n}",
        group_key=f"group-{n}",
        firing=(f"fp-{n}",),
        ended_at=None,
        payload={"n": n},
    )


def claim_all(database: str | None, folder: str, runs: list[QueuedRun], start: float, out) -> None:
    intake = Intake.in_archive(folder, dedup_window_seconds=3600, database=database)
    intake.get("warm-up")  # the connection, before the clock
    while time.time() < start:
        time.sleep(0.001)
    out.put([run.task_id for run in runs if intake.claim(run) is not None])


def measure(database: str | None, folder: Path, runs: int, workers: int) -> float:
    intake = Intake.in_archive(folder, dedup_window_seconds=3600, database=database)
    decisions = intake.accept([planned(n) for n in range(runs)], source="benchmark")
    queued = [decision.run for decision in decisions if decision.run is not None]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.time() + 3.0  # every process started and connected
    processes = [
        context.Process(
            target=claim_all,
            args=(database, str(folder), queued if n % 2 == 0 else queued[::-1], start, out),
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    claimed = [out.get(timeout=600) for _ in processes]
    elapsed = time.time() - start
    for process in processes:
        process.join()
    counted = Counter(task_id for got in claimed for task_id in got)
    if len(counted) != runs or set(counted.values()) != {1}:
        raise SystemExit(
            f"not exactly once: {len(counted)} runs claimed, counts {Counter(counted.values())}"
        )
    return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="claims-") as tmp:
        root = Path(tmp)
        for workers in (1, args.workers):
            print(f"sqlite, {workers} workers ...", file=sys.stderr)
            rate = measure(None, root / f"sqlite-{workers}", args.runs, workers)
            rows.append(("SQLite", workers, rate))
        if postgres_bindir() is None:
            print("PostgreSQL is not installed: skipped", file=sys.stderr)
        else:
            with start_postgres(root / "pg", max_connections=50) as cluster:
                for workers in (1, args.workers):
                    name = f"claims_{workers}"
                    cluster.psql(f"CREATE DATABASE {name}")
                    url = f"postgresql://postgres@127.0.0.1:{cluster.port}/{name}"
                    print(f"postgres, {workers} workers ...", file=sys.stderr)
                    rows.append(
                        ("PostgreSQL", workers, measure(url, root / name, args.runs, workers))
                    )
    print(f"{'ledger':<12} {'workers':>7} {'claims/s':>9}   ({args.runs} runs, each claimed once)")
    for ledger, workers, rate in rows:
        print(f"{ledger:<12} {workers:>7} {rate:>9.0f}")


if __name__ == "__main__":
    main()
