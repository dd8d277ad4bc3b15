"""The queue's thread workers: a run queued by this process is picked up without a poll's wait.

Real huey on SQLite, real worker threads; the task is a function that notes when it ran. The
workers' poll delay is raised to 30 s so that only the wake-up can explain a quick pickup.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from workbooks.service.intake import QueuedRun
from workbooks.service.queue import RunQueue

SLOW_POLL_SECONDS = 30.0


def queued(task_id: str) -> QueuedRun:
    return QueuedRun(
        task_id=task_id,
        runbook="tiny",
        incident_id="incident",
        payload={},
        source="demo",
        accepted_at=time.time(),
        state="queued",
    )


def test_a_run_queued_here_wakes_an_idle_worker_and_stop_wakes_them_all(tmp_path: Path) -> None:
    ran: dict[str, float] = {}
    done = threading.Event()

    def run_workbook(task_id: str, *args: Any) -> None:
        ran[task_id] = time.monotonic()
        done.set()

    queue = RunQueue(tmp_path)
    queue.register(run_workbook)
    consumer = queue.consumer(2, "thread", shutdown_timeout=10)
    consumer.start()
    try:
        for worker, _ in consumer.worker_threads:
            worker.delay = worker.max_delay = SLOW_POLL_SECONDS
        time.sleep(0.5)  # both workers now wait out their (long) delay
        queued_at = time.monotonic()
        queue.enqueue(queued("first"))
        assert done.wait(10), "the run was not picked up"
        assert ran["first"] - queued_at < 5, "the worker waited for its poll, not the wake-up"
        for worker, _ in consumer.worker_threads:
            worker.delay = worker.max_delay = SLOW_POLL_SECONDS
        time.sleep(0.5)
    finally:
        stopping = time.monotonic()
        consumer.stop(graceful=True)
    assert time.monotonic() - stopping < 5, "a worker slept through the stop"
    assert not any(thread.is_alive() for _, thread in consumer.worker_threads)
