"""Scale: runs per minute with one and with two ``workbook worker`` processes, and the takeover.

    .venv/bin/python benchmarks/scale.py                 # the table (median of 3 trials)
    .venv/bin/python benchmarks/scale.py --runs 8 --trials 3

Each trial starts a real ``redis-server``, ``workbook serve --role intake`` and the workers
(each in a folder of its own, one run at a time each), on a fresh local archive folder, with the
project's ``high-latency`` runbook on its bundled demo evidence (``--prometheus demo``: no
Prometheus). ``--runs`` new alert groups are posted at once; the time from the first post until
every run is archived gives runs per minute, and per core (the cores the workers can use:
one per worker, at most this machine's).

``takeover``: two workers; a group whose run takes longer (``svc-echo`` sleeping
``--sleep`` seconds) is posted, its worker SIGKILLed mid-run, and the time from the kill until
the other worker starts the run again (its ``started_at``), then until it is archived, is taken.
The other worker notices within ``WORKBOOKS_RECOVERY_INTERVAL_SECONDS`` (set to 5 here; 60 by
default) on one host; a worker on another host is noticed when its lease (60 s) runs out.

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fleet harness the proof test uses

from scale_fleet import Fleet, delivery, free_port, wait_until  # noqa: E402
from workbooks.archive.store import Archive  # noqa: E402

DEMO_ALERT = ROOT / "lib" / "workbooks" / "demo" / "high-latency" / "alert.json"
RECOVERY_SECONDS = "5"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pings(client: object) -> bool:
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


def demo_delivery(n: int, trial: str) -> dict:
    payload = json.loads(DEMO_ALERT.read_text())
    payload["groupKey"] = f'{{}}:{{bench="{trial}-{n}"}}'
    for alert in payload["alerts"]:
        alert["fingerprint"] = f"{trial}-{n}"
    return payload


def throughput(scratch: Path, workers: int, runs: int, trial: str) -> float:
    """Runs per minute: ``runs`` demo alerts through intake and ``workers`` worker processes."""
    with redis_server(scratch) as redis_url:
        archive = scratch / "archive"
        fleet = Fleet(
            base=scratch / "hosts",
            archive=str(archive),
            redis_url=redis_url,
            env={"WORKBOOKS_RECOVERY_INTERVAL_SECONDS": RECOVERY_SECONDS},
            notebooks=None,
        )
        try:
            fleet.start_intake()
            for number in range(workers):
                fleet.start_worker(f"worker-{number}")
            time.sleep(3)  # the workers import papermill before their first run
            reader = Archive(archive)
            started = time.monotonic()
            for n in range(runs):
                assert fleet.post(demo_delivery(n, trial)).status_code == 202
            wait_until(lambda: len(reader.runs()) >= runs, 900, f"{runs} runs", every=0.1)
            elapsed = time.monotonic() - started
        finally:
            fleet.stop()
    return runs / elapsed * 60


def takeover(scratch: Path, sleep: float) -> tuple[float, float]:
    """Seconds from a worker's SIGKILL to its run started again elsewhere, and archived."""
    with redis_server(scratch) as redis_url:
        archive = scratch / "archive"
        fleet = Fleet(
            base=scratch / "hosts",
            archive=str(archive),
            redis_url=redis_url,
            env={"WORKBOOKS_RECOVERY_INTERVAL_SECONDS": RECOVERY_SECONDS},
        )
        names = ["worker-a", "worker-b"]
        try:
            fleet.start_intake()
            for name in names:
                fleet.start_worker(name)
            assert fleet.post(delivery(0, sleep=sleep, prefix="takeover")).status_code == 202
            victim = wait_until(lambda: fleet.busy_worker(names), 60, "the run", every=0.05)
            time.sleep(1.0)
            killed = time.time()
            fleet.kill(victim)
            reader = Archive(archive)
            runs = wait_until(reader.runs, 300, "the run taken over", every=0.1)
            archived = time.time()
        finally:
            fleet.stop()
    return runs[0].started_at.timestamp() - killed, archived - killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="demo runs per trial")
    parser.add_argument("--trials", type=int, default=3, help="trials; the median is shown")
    parser.add_argument("--sleep", type=float, default=10.0, help="the slow run's seconds")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    results: dict[int, list[float]] = {1: [], 2: []}
    takeovers: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="workbooks-scale-") as folder:
        scratch = Path(folder)
        for trial in range(args.trials):
            for workers in (1, 2):
                where = scratch / f"t{trial}-w{workers}"
                where.mkdir()
                rate = throughput(where, workers, args.runs, f"t{trial}w{workers}")
                results[workers].append(rate)
                log(f"trial {trial + 1}: {workers} worker(s): {rate:.1f} runs/min")
            where = scratch / f"t{trial}-takeover"
            where.mkdir()
            takeovers.append(takeover(where, args.sleep))
            again, archived = takeovers[-1]
            log(f"trial {trial + 1}: takeover {again:.1f} s, archived {archived:.1f} s")
    print(f"machine: {cores} cores; high-latency on demo evidence, {args.runs} runs a trial")
    print(f"median of {args.trials} trials:")
    for workers, rates in results.items():
        rate = statistics.median(rates)
        used = min(workers, cores)  # each worker runs one workbook at a time: one core
        print(
            f"  {workers} worker(s): {rate:6.1f} runs/min  {rate / used:6.1f} runs/min per core"
            f"  (trials: {', '.join(f'{each:.1f}' for each in rates)})"
        )
    started = statistics.median(each[0] for each in takeovers)
    done = statistics.median(each[1] for each in takeovers)
    print(
        f"  takeover after SIGKILL: run started again after {started:.1f} s, archived after "
        f"{done:.1f} s (recovery interval {RECOVERY_SECONDS} s, slow run {args.sleep:g} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
