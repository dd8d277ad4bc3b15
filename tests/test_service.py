"""The webhook service on a real uvicorn: bad input, auth, limits, dedup, restarts, Redis.

Also home to the helpers the other service tests import: payload builders, the service in a
thread of the test process (:class:`ServiceThread`) and as a real subprocess
(:class:`ServiceProcess`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from workbooks.archive.access import MAX_REQUEST_HEAD_BYTES
from workbooks.archive.store import Archive, incident_id
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config, ServiceSettings
from workbooks.core.errors import ConfigError
from workbooks.running.routing import load_runbooks
from workbooks.service.app import Service
from workbooks.service.intake import LEASE_SECONDS, Intake, PlannedRun, owner_id, plan
from workbooks.service.ledger import SqliteLedger
from workbooks.service.queue import QUEUE_FILE, RunQueue
from workbooks.service.server import serve

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = Path(__file__).parent / "notebooks" / "service"
TOKEN = "s3cret-token"
HANDLED = ("EchoAlert", "HighLatency", "OtherAlert")

# -- payloads ------------------------------------------------------------------------------------


def alert(
    name: str = "EchoAlert",
    fingerprint: str = "fp-1",
    *,
    status: str = "firing",
    starts: str = "2026-11-28T14:05:00Z",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "service": "inference-api", **labels},
        "annotations": {"summary": f"{name} fired"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-28T15:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": fingerprint,
    }


def delivery(*alerts: dict[str, Any], group_key: str = '{}:{alertname="EchoAlert"}') -> dict:
    firing = any(each["status"] == "firing" for each in alerts)
    return {
        "version": "4",
        "status": "firing" if firing else "resolved",
        "receiver": "workbooks",
        "groupKey": group_key,
        "groupLabels": {"alertname": alerts[0]["labels"].get("alertname", "")},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "truncatedAlerts": 0,
        "alerts": list(alerts),
    }


def service_config(archive: Path, **service: Any) -> Config:
    settings = {"webhook_token": TOKEN, **service}
    return Config(
        notebooks=str(RUNBOOKS), archive=str(archive), service=ServiceSettings(**settings)
    )


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the service in this process -----------------------------------------------------------------


class ServiceThread:
    """A :class:`Service` behind a real uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.server = uvicorn.Server(
            uvicorn.Config(
                service.app,
                host="127.0.0.1",
                port=0,
                lifespan="off",
                ws="none",
                log_level="error",
                http="h11",  # as `workbook serve` runs it: long queries answered 414
                h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServiceThread:
        self.service.start()
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "uvicorn to start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.stop(grace_seconds=30)

    def post(self, payload: Any, *, token: str | None = TOKEN, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if not isinstance(payload, str | bytes):
            payload = json.dumps(payload)
        return requests.post(f"{self.url}/alerts", data=payload, headers=headers, timeout=30)

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on /metrics."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        samples = [line for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]
        return sum(float(line.rsplit(" ", 1)[1]) for line in samples)

    def drained(self) -> bool:
        counts = self.service.intake.counts()
        return counts["queued"] + counts["running"] == 0 and self.service.queue.pending_count() == 0


@pytest.fixture
def accepting(tmp_path: Path) -> Iterator[ServiceThread]:
    """The service with no workers: what it accepts stays queued, nothing runs."""
    config = service_config(tmp_path / "archive", max_body_bytes=4096)
    service = Service(config=config, archive_dir=tmp_path / "archive", source="demo", workers=0)
    with ServiceThread(service) as running:
        yield running


# -- the service as a real process ---------------------------------------------------------------


class ServiceProcess:
    """``python -m workbooks serve`` in a subprocess, on a free loopback port."""

    def __init__(
        self,
        archive: Path,
        *,
        workers: int,
        prometheus: str = "demo",
        notebooks: Path | None = RUNBOOKS,
        env: dict[str, str] | None = None,
    ) -> None:
        self.archive = archive
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = archive.parent / f"service-{self.port}.log"
        environment = {**os.environ, "WORKBOOKS_WEBHOOK_TOKEN": TOKEN, **(env or {})}
        environment.pop("WORKBOOKS_NOTEBOOKS", None)
        if notebooks is not None:
            environment["WORKBOOKS_NOTEBOOKS"] = str(notebooks)
        command = [sys.executable, "-m", "workbooks", "--archive", str(archive), "serve"]
        command += ["--port", str(self.port), "--workers", str(workers)]
        command += ["--prometheus", prometheus]
        archive.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT
            )
        wait_for(self._ready, 60, f"the service on {self.url}\n{self.log()}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post(self, payload: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return requests.post(f"{self.url}/alerts", json=payload, headers=headers, timeout=30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def assert_nothing_queued(running: ServiceThread) -> None:
    archive = running.service.archive
    assert running.service.queue.pending_count() == 0
    assert running.service.intake.runs() == []
    assert archive.runs() == []
    assert [path.name for path in archive.root.iterdir() if path.is_dir()] in ([], [".staging"])


# -- bad input -----------------------------------------------------------------------------------

BAD = [
    ("malformed-json", '{"version": "4", "alerts": [', 400, "not valid JSON"),
    ("not-an-object", "[1, 2]", 400, "JSON object"),
    ("wrong-version", json.dumps({**delivery(alert()), "version": "3"}), 400, "version"),
    (
        "missing-group-key",
        json.dumps({k: v for k, v in delivery(alert()).items() if k != "groupKey"}),
        400,
        "groupKey",
    ),
    (
        "missing-alertname",
        json.dumps(delivery({**alert(), "labels": {"service": "x"}})),
        400,
        "alerts[0].labels",
    ),
    ("no-alerts", json.dumps({**delivery(alert()), "alerts": []}), 400, "alerts"),
    ("unknown-alertname", json.dumps(delivery(alert("DiskFull"))), 422, "DiskFull"),
    (
        "one-unknown-among-known",
        json.dumps(delivery(alert(), alert("DiskFull", "fp-2"))),
        422,
        "handled: EchoAlert, HighLatency, OtherAlert",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_is_refused_with_a_message_and_nothing_queued(
    accepting: ServiceThread, body: str, status: int, message: str
) -> None:
    response = accepting.post(body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert_nothing_queued(accepting)
    reason = "unknown_alertname" if status == 422 else "bad_alert"
    assert accepting.metric("workbooks_deliveries_rejected_total") == 1
    text = requests.get(f"{accepting.url}/metrics", timeout=10).text
    assert f'workbooks_deliveries_rejected_total{{reason="{reason}"}} 1.0' in text


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_a_configured_token_is_required(accepting: ServiceThread, headers: dict) -> None:
    response = accepting.post(delivery(alert()), token=None, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "WORKBOOKS_WEBHOOK_TOKEN" in response.json()["error"]
    assert_nothing_queued(accepting)


def test_an_oversized_body_is_refused_by_its_declared_length(accepting: ServiceThread) -> None:
    big = delivery(alert(note="x" * 5000))
    response = accepting.post(big)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]
    assert_nothing_queued(accepting)


def test_an_oversized_stream_is_refused_before_it_ends(accepting: ServiceThread) -> None:
    """Chunked, no length: the 413 comes while the client is still sending."""
    host, port = accepting.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 1024
        for _ in range(6):  # 6 KiB, over the 4 KiB limit; the final 0-chunk is never sent
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = connection.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert_nothing_queued(accepting)


def test_healthz_and_metrics(accepting: ServiceThread) -> None:
    health = requests.get(f"{accepting.url}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "queue": "sqlite",
        "pending": 0,
        "workers": 0,
        "warm_kernels": 0,  # no workers, so no warm kernels
        "runs": {"queued": 0, "running": 0, "succeeded": 0, "failed": 0},
    }
    accepting.post(delivery(alert()))
    accepting.post("{", token="wrong")
    metrics = requests.get(f"{accepting.url}/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert accepting.metric("workbooks_deliveries_received_total") == 2
    assert accepting.metric("workbooks_runs_queued_total") == 1
    assert accepting.metric("workbooks_queue_pending") == 1
    for name, kind in (
        ("workbooks_deliveries_rejected_total", "counter"),
        ("workbooks_runs_deduplicated_total", "counter"),
        ("workbooks_runs_running", "gauge"),
        ("workbooks_runs_succeeded_total", "counter"),
        ("workbooks_runs_failed_total", "counter"),
        ("workbooks_run_duration_seconds", "histogram"),
        ("workbooks_run_queue_wait_seconds", "histogram"),
        ("workbooks_notifications_failed_total", "counter"),
    ):
        assert f"# TYPE {name} {kind}" in metrics.text
    assert 'workbooks_run_duration_seconds_count{runbook="svc-echo"} 0.0' in metrics.text


# -- what is accepted ----------------------------------------------------------------------------


def test_accepts_at_once_and_runs_nothing_itself(accepting: ServiceThread) -> None:
    response = accepting.post(delivery(alert(), alert(fingerprint="fp-2", instance="api-1")))
    assert response.status_code == 202
    body = response.json()
    starts = datetime(2026, 11, 28, 14, 5, tzinfo=UTC)
    assert body["incidents"] == [incident_id('{}:{alertname="EchoAlert"}', starts, "EchoAlert")]
    assert [entry["runbook"] for entry in body["queued"]] == ["svc-echo"]
    assert body["deduplicated"] == [] and body["resolved"] == []
    assert accepting.service.queue.pending_count() == 1
    assert accepting.service.archive.runs() == []  # no workers: nothing ran


def test_a_repeat_is_deduplicated_and_a_new_alert_runs_again(accepting: ServiceThread) -> None:
    first = accepting.post(delivery(alert())).json()
    repeat = accepting.post(delivery(alert())).json()
    assert repeat["queued"] == []
    assert repeat["deduplicated"] == first["queued"]
    grown = accepting.post(
        delivery(alert(), alert(fingerprint="fp-2", starts="2026-11-28T14:09:00Z"))
    )
    assert grown.json()["incidents"] == first["incidents"]  # a new run of the same incident
    assert len(grown.json()["queued"]) == 1
    assert accepting.service.queue.pending_count() == 2


def test_a_resolved_group_starts_no_run(accepting: ServiceThread) -> None:
    body = accepting.post(delivery(alert(status="resolved"))).json()
    assert body["queued"] == [] and body["deduplicated"] == []
    assert [entry["runbook"] for entry in body["resolved"]] == ["svc-echo"]
    assert accepting.service.queue.pending_count() == 0
    # Firing again after it resolved: a new incident is investigated, not deduplicated away.
    accepting.post(delivery(alert()))
    again = accepting.post(delivery(alert(status="resolved")))
    assert again.status_code == 202
    refire = accepting.post(delivery(alert(starts="2026-11-28T16:00:00Z"))).json()
    assert len(refire["queued"]) == 1


def test_a_delivery_split_across_runbooks_queues_one_run_each(accepting: ServiceThread) -> None:
    payload = delivery(
        alert(), alert("OtherAlert", "fp-o1"), alert(fingerprint="fp-2"), group_key="{}:{}"
    )
    body = accepting.post(payload).json()
    assert sorted(entry["runbook"] for entry in body["queued"]) == ["svc-echo", "svc-other"]
    runs = {run.runbook: run for run in accepting.service.intake.runs()}
    echoed = [each["fingerprint"] for each in runs["svc-echo"].payload["alerts"]]
    assert echoed == ["fp-1", "fp-2"]
    assert [each["fingerprint"] for each in runs["svc-other"].payload["alerts"]] == ["fp-o1"]


def test_label_values_never_reach_a_path(accepting: ServiceThread) -> None:
    hostile = "../../../etc/passwd\x00; rm -rf /"
    group_key = f'{{}}:{{service="{hostile}"}}'
    body = accepting.post(delivery(alert(service=hostile), group_key=group_key)).json()
    (incident,) = body["incidents"]
    assert re.fullmatch(r"\d{8}T\d{4}Z-[a-z0-9-]+-[0-9a-f]{8}", incident)
    written = [path.name for path in accepting.service.archive.root.iterdir()]
    assert written and all(re.fullmatch(r"(intake|queue)\.sqlite(-wal|-shm)?", n) for n in written)


def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    config = Config(notebooks=str(RUNBOOKS), archive=str(tmp_path))
    with pytest.raises(ConfigError, match="WORKBOOKS_WEBHOOK_TOKEN"):
        serve(host="0.0.0.0", config=config, archive_dir=tmp_path, prometheus="demo", workers=0)
    with pytest.raises(ConfigError, match="WORKBOOKS_PROMETHEUS_URL"):
        serve(config=config, archive_dir=tmp_path, prometheus=None, workers=0)


def test_the_service_keeps_the_ledgers_log_open_between_deliveries(tmp_path: Path) -> None:
    """The last connection to close a WAL database checkpoints and deletes its log: each
    delivery's transaction did that, and under a storm held the lock the next one waited for."""
    archive = tmp_path / "archive"
    log = archive / "intake.sqlite-wal"
    service = Service(config=service_config(archive), archive_dir=archive, source="demo", workers=0)
    assert not log.exists()  # the ledger was created, and its only connection closed
    with ServiceThread(service) as running:
        for number in range(3):
            posted = running.post(delivery(alert(), group_key=f'{{}}:{{n="{number}"}}'))
            assert len(posted.json()["queued"]) == 1
            assert log.exists()
        assert len(Intake.in_archive(archive, dedup_window_seconds=3600).runs()) == 3
    assert not log.exists()  # released at the stop: all of it is in the file
    assert len(Intake.in_archive(archive, dedup_window_seconds=3600).runs()) == 3


# -- the ledger under contention -----------------------------------------------------------------


def _accept_in_process(path: str, barrier: Any, results: Any) -> None:
    intake = Intake(path, dedup_window_seconds=3600)
    planned = PlannedRun(
        runbook="svc-echo",
        incident_id="20261128T1405Z-echoalert-00000000",
        group_key="{}:{}",
        firing=("fp-1", "fp-2"),
        ended_at=None,
        payload=delivery(alert()),
    )
    barrier.wait(timeout=60)  # every process hits the ledger at the same moment
    for decision in intake.accept([planned], source="demo"):
        results.put(decision.action)


def _open_ledger_in_process(path: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=60)
    try:
        with SqliteLedger(Path(path), busy_timeout_seconds=10).transaction() as db:
            results.put(db.execute("PRAGMA journal_mode").fetchone()[0])
    except Exception as exc:  # the failure is what the test reports
        results.put(str(exc))


def test_processes_opening_a_new_ledger_at_once_all_get_it(tmp_path: Path) -> None:
    """Workers of a new service open its new ledger together: SQLite refuses all but one the
    switch to WAL without waiting; each must get the ledger all the same (before: 25 of 100
    trials of 6 processes had one "database is locked")."""
    context = multiprocessing.get_context("fork")
    count = 6
    for trial in range(20):
        barrier, results = context.Barrier(count), context.Queue()
        path = str(tmp_path / f"ledger-{trial}.sqlite")
        processes = [
            context.Process(target=_open_ledger_in_process, args=(path, barrier, results))
            for _ in range(count)
        ]
        for process in processes:
            process.start()
        answers = [results.get(timeout=60) for _ in range(count)]
        for process in processes:
            process.join(timeout=30)
        assert answers == ["wal"] * count, f"trial {trial}: {answers}"


def test_concurrent_identical_deliveries_across_processes_queue_one_run(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    count = 4
    barrier, results = context.Barrier(count), context.Queue()
    path = str(tmp_path / "intake.sqlite")
    processes = [
        context.Process(target=_accept_in_process, args=(path, barrier, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    actions = sorted(results.get(timeout=60) for _ in range(count))
    for process in processes:
        process.join(timeout=30)
    assert actions == ["deduplicated"] * (count - 1) + ["queued"]


def test_the_ledger_hands_out_lost_and_abandoned_runs_again(tmp_path: Path) -> None:
    intake = Intake(tmp_path / "intake.sqlite", dedup_window_seconds=3600)
    planned = plan(parse_alert_group(delivery(alert())), load_runbooks(RUNBOOKS))
    (decision,) = intake.accept(planned, source="demo", now=1000.0)
    run = decision.run
    assert run is not None
    assert intake.orphans(pending={run.task_id}, now=1100.0) == []  # still in the queue
    assert intake.orphans(pending=set(), now=1010.0) == []  # may be on its way to the queue
    assert [each.task_id for each in intake.orphans(pending=set(), now=1100.0)] == [run.task_id]

    elsewhere = "another-host:4242:abc"
    assert intake.claim(run, owner=elsewhere, now=1200.0) is not None
    assert intake.claim(run, owner=owner_id(), now=1210.0) is None  # a live claim elsewhere
    assert intake.orphans(pending=set(), now=1250.0) == []  # its heartbeat is fresh
    (abandoned,) = intake.orphans(pending=set(), now=1200.0 + LEASE_SECONDS + 1)
    taken = intake.claim(abandoned, owner=owner_id(), now=1200.0 + LEASE_SECONDS + 2)
    assert taken is not None and taken.attempts == 2
    assert not intake.finish(run.task_id, "succeeded", owner=elsewhere)  # too late
    assert intake.finish(run.task_id, "succeeded", owner=owner_id(), run_ids=["r1"])
    assert intake.claim(run) is None  # done: a duplicate task in the queue is skipped
    assert intake.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0}


def test_a_run_archived_by_a_worker_that_died_is_recorded_not_run_again(tmp_path: Path) -> None:
    from workbooks.running.runner import run_alert

    archive_dir = tmp_path / "archive"
    config = service_config(archive_dir)
    service = Service(config=config, archive_dir=archive_dir, source="demo", workers=0)
    runbooks = service.runbooks()
    first, grown = (
        service.intake.accept(plan(parse_alert_group(payload), runbooks), source="demo")[0].run
        for payload in (delivery(alert()), delivery(alert(), alert(fingerprint="fp-2")))
    )
    assert first is not None and grown is not None
    # Workers on this host claim both; one archives its run, then both die unrecorded.
    dead = f"{socket.gethostname()}:{2**22 + 17}:gone"  # above the largest pid Linux allows
    service.intake.claim(first, owner=dead)
    service.intake.claim(grown, owner=dead)
    group = parse_alert_group(first.payload)
    (record,) = run_alert(
        group, config=config, archive=service.archive, source="demo", runbook_id="svc-echo"
    )
    assert service.recover() == 1  # only the run that never got archived runs again
    ledger = service.intake.get(first.task_id)
    assert ledger is not None and ledger.state == "succeeded"
    assert ledger.run_ids == (record.run_id,)
    assert service.queue.pending_ids() == {grown.task_id}


# -- restarts ------------------------------------------------------------------------------------


def test_an_accepted_alert_survives_a_kill_and_runs_once(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    accepting = ServiceProcess(archive, workers=0)  # accepts, never runs: a kill before any run
    response = accepting.post(delivery(alert()))
    assert response.status_code == 202
    accepting.kill()
    assert Archive(archive).runs() == []
    assert RunQueue(archive).pending_count() == 1

    running = ServiceProcess(archive, workers=1)
    try:
        wait_for(lambda: Archive(archive).runs(), 60, f"the run\n{running.log()}")
        time.sleep(2)  # time enough for a duplicate run to show up, if there were one
        again = running.post(delivery(alert())).json()
    finally:
        assert running.stop() == 0, running.log()
    (run,) = Archive(archive).runs()
    assert run.status == "succeeded" and run.incident_id == response.json()["incidents"][0]
    assert again["deduplicated"] and not again["queued"]  # the ledger outlived the kill too


def test_a_run_killed_midway_runs_again_once_after_restart(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    first = ServiceProcess(archive, workers=1)
    first.post(delivery(alert(sleep_seconds="3")))
    intake = Intake.in_archive(archive, dedup_window_seconds=3600)
    wait_for(lambda: intake.counts()["running"] == 1, 60, f"the run to start\n{first.log()}")
    first.kill()
    assert Archive(archive).runs() == []

    second = ServiceProcess(archive, workers=1)
    try:
        wait_for(lambda: intake.counts()["succeeded"] == 1, 60, f"the rerun\n{second.log()}")
    finally:
        assert second.stop() == 0, second.log()
    (run,) = Archive(archive).runs()
    assert run.status == "succeeded"
    (ledger,) = intake.runs()
    assert ledger.attempts == 2 and ledger.run_ids == (run.run_id,)


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "archive", workers=1)
    assert service.stop() == 0
    assert "Traceback" not in service.log()


def test_sigterm_mid_run_waits_its_grace_then_leaves_the_run_for_next_time(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "archive"
    service = ServiceProcess(archive, workers=1, env={"WORKBOOKS_SHUTDOWN_GRACE_SECONDS": "1"})
    service.post(delivery(alert(sleep_seconds="60")))
    intake = Intake.in_archive(archive, dedup_window_seconds=3600)
    wait_for(lambda: intake.counts()["running"] == 1, 60, f"the run\n{service.log()}")
    wait_for(lambda: _kernels_in(archive), 30, "its kernel")
    asked = time.monotonic()
    assert service.stop() == 0, service.log()
    assert time.monotonic() - asked < 15
    assert "did not finish in time; they run again at the next start" in service.log()
    wait_for(lambda: not _kernels_in(archive), 15, "the orphaned kernel to exit")
    (left,) = intake.orphans(pending=set())  # its owner is gone: the next start reruns it
    assert left.state == "running"


def _kernels_in(archive: Path) -> list[int]:
    """Processes whose working directory is inside ``archive`` (the runs' kernels)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if Path(os.readlink(cwd)).is_relative_to(archive):
                found.append(int(cwd.parent.name))
        except OSError:
            continue
    return found


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    try:
        wait_for(lambda: _pings(client), 10, "redis-server")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_a_run_flows_through_redis(tmp_path: Path, redis_url: str) -> None:
    import redis

    archive = tmp_path / "archive"
    config = service_config(archive, redis_url=redis_url)
    accepting = Service(config=config, archive_dir=archive, source="demo", workers=0)
    with ServiceThread(accepting) as running:
        assert requests.get(f"{running.url}/healthz", timeout=10).json()["queue"] == "redis"
        assert running.post(delivery(alert())).status_code == 202
    client = redis.Redis.from_url(redis_url)
    assert client.llen("huey.redis.workbooks") == 1  # the task waits in Redis...
    assert not (archive / QUEUE_FILE).exists()  # ...not in SQLite

    worker = Service(config=config, archive_dir=archive, source="demo", workers=1)
    worker.start()
    try:
        wait_for(lambda: worker.intake.counts()["succeeded"] == 1, 60, "the run")
    finally:
        worker.stop()
    assert client.llen("huey.redis.workbooks") == 0
    client.close()
    (run,) = Archive(archive).runs()
    assert run.status == "succeeded"


def test_the_service_also_serves_the_archive_pages(accepting: ServiceThread) -> None:
    """One process for the team: the webhook and the archive's pages side by side."""
    accepting.post(delivery(alert()))
    page = requests.get(f"{accepting.url}/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert requests.post(f"{accepting.url}/", timeout=10).status_code == 405
