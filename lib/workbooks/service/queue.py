"""Where accepted runs wait (huey, on SQLite or Redis), and putting back what a crash took out.

The ledger (:mod:`workbooks.service.intake`) decides whether a run happens; the queue only
carries it to a worker. :func:`recover` compares the two and queues again what the queue lost,
or what a dead worker held.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Literal

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer, Worker

from workbooks.archive.store import ALERT_FILE, Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.errors import WorkbooksError
from workbooks.service.intake import Intake, QueuedRun, alert_fingerprint

QUEUE_FILE = "queue.sqlite"
QUEUE_NAME = "workbooks"
# An idle SQLite queue is polled at most this far apart: the pickup latency of a run queued
# by another process (a run queued by this one wakes its thread workers at once).
MAX_POLL_SECONDS = 0.2
log = logging.getLogger(__name__)


class WakeableWorker(Worker):
    """huey's worker, whose wait between polls of an idle queue ends when ``wake`` is set.

    The service's thread workers share the intake's process: a run it queues wakes them, so
    its pickup waits for no poll (0 to 0.2 s before, 0.1 s on average). Forked process workers
    hold a copy of the event that is never set, and poll as huey does.
    """

    wake: threading.Event | None = None

    def sleep(self) -> None:
        if self.wake is None:
            super().sleep()
            return
        if not self.wake.wait(self.delay):
            self.delay = min(self.delay * self.backoff, self.max_delay)
        elif not self.stop_flag.is_set():  # stopping: left set, for every worker to see
            self.wake.clear()
            self.delay = self.default_delay


class QueueConsumer(Consumer):
    """huey's consumer, leaving the signals to uvicorn: the service stops it itself."""

    worker_class = WakeableWorker

    def __init__(self, huey: Any, *, wake: threading.Event, **options: Any) -> None:
        self._wake = wake
        super().__init__(huey, **options)

    def _create_worker(self) -> WakeableWorker:
        worker = super()._create_worker()
        worker.wake = self._wake
        return worker

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        self._wake.set()  # no worker waits out its poll delay before it sees the flag
        super().stop(graceful)

    def _set_signal_handlers(self) -> None:
        pass


class RunQueue:
    """Where accepted runs wait: huey on SQLite (``<archive>/queue.sqlite``) or on Redis.

    The ledger's task id is the huey task id, so recovery can tell which runs the queue holds.
    """

    def __init__(self, archive_dir: Path, redis_url: str | None = None) -> None:
        self.backend: Literal["sqlite", "redis"] = "redis" if redis_url else "sqlite"
        if redis_url:
            self.huey = RedisHuey(QUEUE_NAME, url=redis_url, results=False)
        else:
            archive_dir.mkdir(parents=True, exist_ok=True)
            self.huey = SqliteHuey(
                QUEUE_NAME, filename=str(archive_dir / QUEUE_FILE), results=False
            )
        self._task: Any = None
        self._wake = threading.Event()  # set when this process queues a run

    def register(self, function: Any) -> None:
        self._task = self.huey.task(name="run_workbook")(function)

    def enqueue(self, run: QueuedRun) -> None:
        self.huey.enqueue(
            self._task.s(
                run.task_id,
                run.payload,
                run.runbook,
                run.source,
                run.accepted_at,
                run.incident_id,
                id=run.task_id,
            )
        )
        self._wake.set()

    def consumer(
        self, workers: int, worker_type: Literal["thread", "process"], *, shutdown_timeout: float
    ) -> QueueConsumer:
        """The workers that drain this queue (not started): they poll an idle queue quickly."""
        return QueueConsumer(
            self.huey,
            wake=self._wake,
            workers=workers,
            worker_type=worker_type,
            periodic=False,
            initial_delay=0.05,
            backoff=1.5,
            max_delay=MAX_POLL_SECONDS,
            shutdown_timeout=shutdown_timeout,
        )

    def pending_ids(self) -> set[str]:
        return {task.id for task in self.huey.pending()}

    def pending_count(self) -> int:
        return int(self.huey.pending_count())


def recover(intake: Intake, queue: RunQueue, archive: Archive) -> list[QueuedRun]:
    """Queue again the runs the queue lost or whose worker died; return those queued again.

    A worker that died after archiving its run but before recording it gets its run recorded
    instead, not run twice.
    """
    requeued = []
    for run in intake.orphans(pending=queue.pending_ids()):
        if run.state == "running" and _archived_meanwhile(intake, archive, run):
            continue
        try:
            queue.enqueue(run)
        except Exception as exc:  # the queue is down: the next pass retries
            log.error("could not queue run %s again (%s)", run.task_id, exc)
            continue
        log.warning("run %s (%s, %s) queued again", run.task_id, run.runbook, run.state)
        requeued.append(run)
    return requeued


def _archived_meanwhile(intake: Intake, archive: Archive, run: QueuedRun) -> bool:
    # This run's alerts, not just its incident: another firing set may have run meanwhile.
    claimed = run.claimed_at or run.accepted_at
    firing = _firing(run.payload)
    if firing is None:
        return False
    done = [
        record
        for record in archive.runs(incident=run.incident_id, runbook=run.runbook)
        if record.started_at.timestamp() >= claimed and _firing(record.path / ALERT_FILE) == firing
    ]
    if not done:
        return False
    state = "failed" if any(record.status == "failed" for record in done) else "succeeded"
    run_ids = [record.run_id for record in done]
    return intake.finish(run.task_id, state, owner=run.owner, run_ids=run_ids)


def _firing(payload: dict[str, Any] | Path) -> set[str] | None:
    try:
        if isinstance(payload, Path):
            payload = json.loads(payload.read_text(encoding="utf-8"))
        group = parse_alert_group(payload)
    except (OSError, ValueError, WorkbooksError):
        return None
    return {alert_fingerprint(alert) for alert in group.firing}
