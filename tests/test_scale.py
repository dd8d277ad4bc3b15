"""The proof of issue 13: intake and workers apart, a worker killed mid-run, nothing lost or twice.

A real Redis, ``workbook serve --role intake`` and two ``workbook worker`` processes, each in a
working directory of its own; 200 alerts across 50 groups posted to intake (every delivery twice,
and five groups grow a new firing alert later). One worker is SIGKILLed while it runs a slow
group: the other takes the run over and archives it once. Two archives:

- an S3-compatible server (moto) on loopback with the index and ledger on PostgreSQL, so the
  processes share no folder: the setup for several hosts;
- a local archive folder, which the processes share: roles on one machine.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from s3server import ACCESS_KEY, SECRET_KEY, S3Server, s3_server
from scale_fleet import Fleet, delivery, wait_until
from test_service import redis_url  # noqa: F401  (the fixture: a real redis-server)
from workbooks.archive.store import Archive
from workbooks.core.config import ArchiveStorage

pytestmark = pytest.mark.slow

GROUPS = 50
ALERTS_PER_GROUP = 4  # 200 alerts
GROWN = 5  # groups that later fire one more alert: a new firing set, one more run each
SLOW = 0  # the group whose run is in progress when its worker is killed
SLOW_SECONDS = 8.0
WORKERS = ("worker-a", "worker-b")
DB_PASSWORD = "pw-Fleet-Never-Shown-4c1d"


def prove(fleet: Fleet, reader: Archive) -> dict[str, float]:
    """Run the scenario; assert what the issue promises; return the timings."""
    fleet.start_intake()
    for name in WORKERS:
        fleet.start_worker(name)
    slow = delivery(SLOW, alerts=ALERTS_PER_GROUP, sleep=SLOW_SECONDS)
    assert fleet.post(slow).status_code == 202
    victim = wait_until(lambda: fleet.busy_worker(list(WORKERS)), 60, "the slow run to start")
    time.sleep(1.5)  # well inside the run: its kernel is sleeping in the investigation
    killed_at = time.time()
    fleet.kill(victim)
    survivor = next(name for name in WORKERS if name != victim)
    # Taken over before the storm: a run queued again goes to the back of the queue, so behind
    # 50 groups its start would measure the queue, not the takeover.
    wait_until(reader.runs, 120, "the killed worker's run taken over and archived")

    started = time.monotonic()
    deliveries = [delivery(group, alerts=ALERTS_PER_GROUP) for group in range(1, GROUPS)]
    with ThreadPoolExecutor(8) as pool:  # every delivery twice, at once: Alertmanager retries
        answers = list(pool.map(fleet.post, deliveries + deliveries))
    assert all(answer.status_code == 202 for answer in answers)
    for group in range(1, GROWN + 1):
        grown = delivery(group, alerts=ALERTS_PER_GROUP + 1)
        assert fleet.post(grown).status_code == 202
    expected = GROUPS + GROWN
    wait_until(lambda: len(reader.runs()) >= expected, 600, f"{expected} runs archived")
    drained = time.monotonic() - started
    time.sleep(3)  # a straggler would show up now
    runs = reader.runs()

    # Every group ran exactly once per firing set: 50 incidents, five with a second run.
    per_incident = Counter(run.incident_id for run in runs)
    assert len(runs) == expected, sorted(per_incident.items())
    assert len(per_incident) == GROUPS and sorted(per_incident.values()).count(2) == GROWN
    for incident in (run.incident_id for run in runs if per_incident[run.incident_id] == 2):
        firing_sets = {
            frozenset(alert["fingerprint"] for alert in _alert(run)["alerts"])
            for run in runs
            if run.incident_id == incident
        }
        assert len(firing_sets) == 2  # the two runs are of the two firing sets
    # The killed worker's run was taken over, and archived once, by the other.
    taken_over = [run for run in runs if run.labels.get("service") == f"fleet-{SLOW}"]
    assert len(taken_over) == 1 and taken_over[0].worker == survivor
    # Every run succeeded, the one taken over included; if not, say why and what its worker said.
    failed = [(run.run_id, run.worker, run.error) for run in runs if run.status != "succeeded"]
    assert not failed, (failed, {name: fleet.log(name)[-2000:] for name in WORKERS})
    # Each run says which host and worker ran it.
    assert {run.worker for run in runs} <= set(WORKERS) and all(run.host for run in runs)
    assert f"by {survivor}" in fleet.log(survivor)
    # The archive pages (served by intake) list every incident.
    listing = requests.get(f"{fleet.url}/?limit=500", timeout=30).text
    assert all(run.incident_id in listing for run in runs)
    takeover = taken_over[0].started_at.timestamp() - killed_at
    return {"takeover_seconds": takeover, "drain_seconds": drained, "runs": float(len(runs))}


def _alert(run) -> dict:  # type: ignore[no-untyped-def]
    return json.loads((run.path / "alert.json").read_text())


def test_roles_on_one_machine_share_the_archive_folder(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    archive = tmp_path / "archive"
    fleet = Fleet(base=tmp_path / "hosts", archive=str(archive), redis_url=redis_url)
    try:
        timings = prove(fleet, Archive(archive))
    finally:
        fleet.stop()
    assert timings["takeover_seconds"] < 30


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def test_workers_that_share_no_folder_share_redis_postgres_and_the_bucket(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    s3: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workbooks.synthetic.postgres import postgres_bindir, start_postgres

    if postgres_bindir() is None:
        pytest.skip("needs PostgreSQL's initdb and postgres (scripts/install-system-deps)")
    s3.make_bucket("fleet")
    with start_postgres(tmp_path / "pg", max_connections=60) as cluster:
        cluster.psql("CREATE DATABASE fleet")
        # Trust authentication ignores it; it is here to prove it is never written anywhere.
        database = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{cluster.port}/fleet"
        env = {**s3.env("fleet"), "WORKBOOKS_DATABASE_URL": database}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        url = "s3://fleet/archive"
        fleet = Fleet(base=tmp_path / "hosts", archive=url, redis_url=redis_url, env=env)
        reader = Archive(url, storage=ArchiveStorage(cache=str(tmp_path / "reader")))
        try:
            timings = prove(fleet, reader)
        finally:
            fleet.stop()
        assert timings["takeover_seconds"] < 30
        # Every run is in the bucket with its commit marker, and nothing half-written is left.
        assert reader.objects is not None
        listing = reader.objects.listing()
        assert len(listing.runs) == GROUPS + GROWN and not listing.uncommitted
        # The credentials reached no log line of any process (nor, by the other tests, a file).
        for name in fleet.processes:
            text = fleet.log(name)
            assert SECRET_KEY not in text and ACCESS_KEY not in text and DB_PASSWORD not in text
        # No folder was shared: each process kept its own cache.
        caches = [path for path in (tmp_path / "hosts").glob("*/cache") if path.is_dir()]
        assert len(caches) == 3
