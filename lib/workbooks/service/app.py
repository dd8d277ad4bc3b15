"""The webhook service: Alertmanager posts, huey queues, workers run the workbooks.

``POST /alerts`` validates a delivery, routes it, records it in the intake ledger (which drops
duplicates) and queues one run per (alert group, runbook), then answers 202 before anything
runs. Worker threads in the same process take runs off the queue (SQLite in the archive, or
Redis), run them with the runner, apply a resolution that arrived meanwhile, and send the summary
on. ``GET /healthz`` and ``GET /metrics`` (Prometheus text) are there for whoever watches it.

Exactly once: the ledger, not the queue, decides whether a run happens. A worker claims a run
before executing it; a duplicate task is skipped; a run whose worker died (the service killed
mid-run) is queued again when the service next starts, or by the recovery pass every minute.

Roles (docs/scale.md): ``all`` (the default: accepts and runs), ``intake`` (accepts and queues,
runs nothing) and ``worker`` (runs what the Redis queue holds, accepts nothing), so intake and
workers scale apart and run on different hosts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from huey.consumer import ConsumerStopped
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from workbooks.archive.access import Guard, ReaderAccess, credentials, token_matches
from workbooks.archive.records import ran_by, set_worker_name
from workbooks.archive.store import Archive, RunRecord
from workbooks.archive.web import create_app
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config
from workbooks.core.errors import BadAlertError, UnknownRunbookError, WorkbooksError
from workbooks.running.routing import Runbook, load_runbooks
from workbooks.running.warm import KernelPool
from workbooks.service import notify
from workbooks.service.intake import Decision, Intake, QueuedRun, plan
from workbooks.service.metrics import Metrics, QueueDepth
from workbooks.service.queue import QueueConsumer, RunQueue, recover
from workbooks.service.roles import Role, check_role, worker_count

SHUTDOWN_GRACE_SECONDS = 20.0
# Routes outside the reader check: /alerts takes the webhook token; the others are for monitors.
OPEN_PATHS = ("/alerts", "/healthz", "/metrics")

log = logging.getLogger(__name__)


class Service:
    """The app, its queue and ledger, and (``workers`` > 0) the worker threads that drain it."""

    def __init__(
        self,
        *,
        config: Config,
        archive_dir: str | Path,
        source: str,
        workers: int | None = None,
        worker_type: Literal["thread", "process"] = "thread",
        role: Role = "all",
        worker_name: str | None = None,
    ) -> None:
        self.config = config
        check_role(role, config, archive_dir)
        self.role = role
        self.archive = Archive(
            archive_dir, storage=config.archive_storage, database=config.database
        )
        self.source = source
        self.workers = 0 if role == "intake" else worker_count(workers, config)
        set_worker_name(worker_name)  # named in each run's record and log line
        self.worker_type = worker_type
        self.shutdown_grace_seconds = config.service.shutdown_grace_seconds
        self.metrics = Metrics()
        self.intake = Intake.in_archive(
            self.archive.root,
            dedup_window_seconds=config.service.dedup_window_seconds,
            database=config.database,
        )
        self.queue = RunQueue(self.archive.root, config.service.redis_url)
        self.queue.register(self._run_task)
        self.metrics.registry.register(QueueDepth(self.queue))
        self._runbooks_lock = threading.Lock()
        self._runbooks: tuple[tuple[tuple[str, int], ...], dict[str, Runbook]] = ((), {})
        self._consumer: QueueConsumer | None = None
        # Warm kernels for thread workers, one per worker (started in start()).
        self.kernels: KernelPool | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.access = ReaderAccess.from_config(config)
        routes = Starlette(
            routes=[
                Route("/alerts", self.post_alerts, methods=["POST"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.get_metrics, methods=["GET"]),
                # The archive's pages (read-only), so one service is all a team runs.
                Mount("/", app=create_app(self.archive, access=None)),
            ]
        )
        # Readers are checked, and security headers added, for every route at once.
        self.app = Guard(routes, access=self.access, open_paths=OPEN_PATHS)

    # -- the HTTP face -----------------------------------------------------------------------

    async def post_alerts(self, request: Request) -> Response:
        self.metrics.received.inc()
        if not self._authorized(request):
            return self._reject(
                401,
                "unauthorized",
                "a bearer token is required: set http_config.authorization.credentials in "
                "Alertmanager's webhook_config to WORKBOOKS_WEBHOOK_TOKEN",
                headers={"WWW-Authenticate": 'Bearer realm="workbooks"'},
            )
        limit = self.config.service.max_body_bytes
        body = await _read_limited(request, limit)
        if body is None:
            return self._reject(
                413,
                "too_large",
                f"the delivery is larger than {limit} bytes; raise service.max_body_bytes in "
                "the config, or set max_alerts in Alertmanager's webhook_config",
            )
        return await run_in_threadpool(self._accept, body)

    def _accept(self, body: bytes) -> Response:
        try:
            runbooks = self.runbooks()
        except WorkbooksError as exc:  # our folder broke, not the alert: let Alertmanager retry
            return self._reject(503, "unavailable", f"the runbooks cannot be read: {exc}")
        try:
            planned = plan(parse_alert_group(body), runbooks)
        except BadAlertError as exc:
            return self._reject(400, "bad_alert", str(exc))
        except UnknownRunbookError as exc:
            return self._reject(422, "unknown_alertname", str(exc))
        try:
            decisions = self.intake.accept(planned, source=self.source)
        except WorkbooksError as exc:  # Alertmanager retries a 5xx: nothing is lost
            return self._reject(503, "unavailable", str(exc))
        by_action: dict[str, list[dict[str, str]]] = {
            "queued": [],
            "deduplicated": [],
            "resolved": [],
        }
        for each, decision in zip(planned, decisions, strict=True):
            by_action[decision.action].append(decision.to_dict())
            if decision.action == "queued":
                self._enqueue(decision)
            elif decision.action == "deduplicated":
                self.metrics.deduplicated.inc()
            else:
                self.metrics.resolved.inc()
                self._mark_resolved(decision.incident_id, each.ended_at)
        incidents = list(dict.fromkeys(decision.incident_id for decision in decisions))
        return JSONResponse({"incidents": incidents, **by_action}, status_code=202)

    def _enqueue(self, decision: Decision) -> None:
        run = decision.run
        if run is None:
            return
        try:
            self.queue.enqueue(run)
            self.metrics.queued.inc()
        except Exception as exc:  # accepted in the ledger: recovery queues it once it can
            log.error("run %s accepted but not queued (%s); recovery will retry", run.task_id, exc)

    def _authorized(self, request: Request) -> bool:
        token = self.config.service.webhook_token
        if not token:
            return True
        return token_matches(credentials(request.headers.get("authorization", ""), "Bearer"), token)

    def _reject(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        self.metrics.rejected.labels(reason).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def healthz(self, request: Request) -> Response:
        try:
            pending = await run_in_threadpool(self.queue.pending_count)
            runs = await run_in_threadpool(self.intake.counts)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "queue": self.queue.backend,
                "pending": pending,
                "workers": self.workers,
                "warm_kernels": self.kernels.ready if self.kernels else 0,
                "runs": runs,
            }
        )

    async def get_metrics(self, request: Request) -> Response:
        data = await run_in_threadpool(generate_latest, self.metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    def runbooks(self) -> dict[str, Runbook]:
        """The runbooks, read again only when a notebook in the folder changed."""
        directory = self.config.notebooks_dir
        stamp = tuple(
            (path.name, path.stat().st_mtime_ns) for path in sorted(directory.glob("*.ipynb"))
        )
        with self._runbooks_lock:
            if stamp != self._runbooks[0] or not self._runbooks[1]:
                self._runbooks = (stamp, load_runbooks(directory, routing=self.config.routing))
            return self._runbooks[1]

    # -- the workers -------------------------------------------------------------------------

    def _run_task(
        self,
        task_id: str,
        payload: dict[str, Any],
        runbook: str,
        source: str,
        accepted_at: float,
        incident_id: str,
    ) -> None:
        offered = QueuedRun(
            task_id=task_id,
            runbook=runbook,
            incident_id=incident_id,
            payload=payload,
            source=source,
            accepted_at=accepted_at,
            state="queued",
        )
        run = self.intake.claim(offered)
        if run is None:
            log.info("run %s already ran, or runs elsewhere: skipped", task_id)
            return
        self.metrics.queue_wait.observe(max(time.time() - accepted_at, 0.0))
        self.metrics.running.inc()
        started = time.monotonic()
        try:
            with self.intake.heartbeat(task_id):
                records, error = self._execute(run)
        finally:
            self.metrics.running.dec()
        failed = error is not None or any(record.status == "failed" for record in records)
        self.intake.finish(
            task_id,
            "failed" if failed else "succeeded",
            run_ids=[record.run_id for record in records],
            error=error,
        )
        (self.metrics.failed if failed else self.metrics.succeeded).labels(runbook).inc()
        self.metrics.duration.labels(runbook).observe(time.monotonic() - started)
        who = ran_by()
        for record in records:
            log.info(
                "%s %s for incident %s in %.1f s on %s by %s: %s",
                record.runbook,
                record.status,
                incident_id,
                record.duration_seconds,
                who["host"],
                who["worker"],
                record.run_id,
            )
        resolved_at = self.intake.resolution(incident_id)
        if resolved_at is not None:  # resolved while this run waited or ran
            self._mark_resolved(incident_id, resolved_at)
        self._notify(run, records, error)

    def _execute(self, run: QueuedRun) -> tuple[list[RunRecord], str | None]:
        from workbooks.running.runner import run_alert  # papermill: only where runs happen

        try:
            group = parse_alert_group(run.payload)
            records = run_alert(
                group,
                config=self.config,
                archive=self.archive,
                source=run.source,
                kernels=self.kernels,
                runbook_id=run.runbook,
            )
        except WorkbooksError as exc:  # e.g. the runbook was removed since, or a full disk
            log.error("run %s of %s could not run: %s", run.task_id, run.runbook, exc)
            return [], str(exc)
        except Exception as exc:  # a bug: recorded as the run's error; the worker lives on
            log.exception("run %s of %s crashed", run.task_id, run.runbook)
            return [], f"{type(exc).__name__}: {exc}"
        return records, None

    def _notify(self, run: QueuedRun, records: Sequence[RunRecord], error: str | None) -> None:
        try:
            deliveries = notify.notify_outcome(
                records, error, archive=self.archive, config=self.config, incident=run.incident_id
            )
        except Exception:  # never let a notification fail or lose the run
            log.exception("notifications for run %s failed", run.task_id)
            deliveries = [notify.Delivery(failed=["(all)"])]
        for delivery in deliveries:
            self.metrics.notifications_sent.inc(delivery.sent)
            self.metrics.notifications_failed.inc(len(delivery.failed))

    def _mark_resolved(self, incident: str, ended_at: datetime | None) -> bool:
        try:
            return self.archive.mark_resolved(incident, ended_at or datetime.now(UTC))
        except WorkbooksError as exc:
            log.warning("could not mark incident %s resolved: %s", incident, exc)
            return False

    # -- recovery and lifecycle --------------------------------------------------------------

    def recover(self) -> int:
        """Queue again the runs the queue lost or whose worker died; how many were."""
        try:
            requeued = recover(self.intake, self.queue, self.archive)
        except Exception as exc:
            log.error("recovery pass failed (%s); the next one retries", exc)
            return 0
        self.metrics.requeued.inc(len(requeued))
        return len(requeued)

    def start(self) -> None:
        """Recover what a previous process left, then start the workers and the recovery pass."""
        for runbook in self.runbooks():  # a bad runbook folder fails here, not on every alert
            for metric in (self.metrics.succeeded, self.metrics.failed, self.metrics.duration):
                metric.labels(runbook)
        if self.config.notifications.any_targets:
            notify.load_plugins()
        self.recover()
        if self.workers > 0:
            import workbooks.running.runner  # noqa: F401  (papermill's import, before the first run)

            self._consumer = self.queue.consumer(
                self.workers, self.worker_type, shutdown_timeout=self.shutdown_grace_seconds
            )
            # Started here, before any thread of ours: forked process workers must not inherit
            # a lock another thread held (measured: they hang on a futex otherwise).
            self._consumer.start()
            if self.worker_type == "thread":
                # One warm kernel per worker, each replaced after its run; forked process
                # workers cannot share kernels started by this process, so they start their own.
                self.kernels = KernelPool(self.workers, warm_up=True)
            self._threads.append(_thread(self._supervise, "huey-consumer"))
        if self.worker_type == "thread" or self.workers == 0:  # no fork from here on
            self.intake.keep_open()
        self._threads.append(_thread(self._recovery_loop, "recovery"))

    def _supervise(self) -> None:
        """huey's consumer loop: restarts a dead worker, returns once stopped."""
        assert self._consumer is not None
        checked = time.monotonic()
        try:
            while True:
                checked = self._consumer.loop(checked)
        except ConsumerStopped:
            self._consumer.huey.notify_interrupted_tasks()

    def _recovery_loop(self) -> None:
        while not self._stopping.wait(self.config.service.recovery_interval_seconds):
            self.recover()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, *, grace_seconds: float | None = None) -> None:
        """Let running runs finish for up to ``grace_seconds``; the rest run at the next start.

        The default is the config's ``service.shutdown_grace_seconds`` (20 s).
        """
        if grace_seconds is None:
            grace_seconds = self.shutdown_grace_seconds
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.shutdown_timeout = grace_seconds
            self._consumer.stop(graceful=True)
        for thread in self._threads:
            thread.join(timeout=grace_seconds + 5)
        if self.kernels is not None:
            self.kernels.close()
        left = self.intake.counts()["running"] if self._consumer is not None else 0
        self.intake.release()
        if left:
            log.warning("%d runs did not finish in time; they run again at the next start", left)


def _thread(target: Any, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` (never read in full)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
