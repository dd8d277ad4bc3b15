"""The intake ledger: which alerts were accepted for which runbook, and what became of each run.

``<archive>/intake.sqlite`` decides, under one ``BEGIN IMMEDIATE`` per delivery, whether a
(group, runbook, firing alerts) pair is new. It is safe across threads and processes, so in an
alert storm of identical deliveries exactly one queues a run. It is also what makes a run happen
exactly once whatever the queue does: a worker must :meth:`Intake.claim` a run before executing
it, and a run whose worker died is handed out again (:meth:`Intake.orphans`).

A run's life: ``queued`` (accepted, waiting in the queue) -> ``running`` (claimed by a worker,
which keeps a heartbeat) -> ``succeeded`` or ``failed``. The queue itself is huey's
(:mod:`workbooks.service.queue`): ``<archive>/queue.sqlite``, or Redis.

With ``database:`` set (WORKBOOKS_DATABASE_URL) the ledger is in PostgreSQL instead
(:mod:`workbooks.service.ledger`), so workers on several hosts share it: a delivery locks its
alert groups, a claim locks its run's row, and the rest is the same SQL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from workbooks.core.config import configured_database
from workbooks.core.errors import ArchiveError
from workbooks.service.ledger import PostgresLedger, SqliteLedger, create_tables
from workbooks.service.owner import owner_id, owner_is_dead
from workbooks.service.planning import PlannedRun, alert_fingerprint, plan

__all__ = [
    "Decision",
    "Intake",
    "PlannedRun",
    "QueuedRun",
    "alert_fingerprint",
    "owner_id",
    "plan",
]

INTAKE_FILE = "intake.sqlite"
RunState = Literal["queued", "running", "succeeded", "failed"]
Action = Literal["queued", "deduplicated", "resolved"]
# A worker renews its claim this often; a claim not renewed for LEASE_SECONDS is taken over.
HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 60.0
# A queued run missing from the queue is re-queued only after this long: the handler enqueues
# a few milliseconds after its intake commit, and a worker holds a task briefly before claiming.
REQUEUE_GRACE_SECONDS = 30.0
_KEEP_FINISHED_SECONDS = 86400.0
_KEEP_RESOLUTIONS_SECONDS = 7 * 86400.0
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the intake did with one :class:`PlannedRun`."""

    action: Action
    incident_id: str
    runbook: str
    task_id: str | None = None  # the queued run, or the earlier one a duplicate joined
    run: QueuedRun | None = field(default=None, repr=False, compare=False)  # when queued

    def to_dict(self) -> dict[str, str]:
        document = {"incident": self.incident_id, "runbook": self.runbook}
        if self.task_id:
            document["task"] = self.task_id
        return document


@dataclass(frozen=True, kw_only=True)
class QueuedRun:
    """An accepted run as the ledger holds it: enough to execute it again from scratch."""

    task_id: str
    runbook: str
    incident_id: str
    payload: dict[str, Any]
    source: str
    accepted_at: float
    state: RunState
    owner: str | None = None
    claimed_at: float | None = None
    attempts: int = 0
    run_ids: tuple[str, ...] = ()
    error: str | None = None


class Intake:
    """The ledger in ``path``, or in PostgreSQL when ``database`` names one; any thread may
    use it (one transaction per call)."""

    def __init__(
        self,
        path: str | Path,
        *,
        dedup_window_seconds: float,
        lease_seconds: float = LEASE_SECONDS,
        busy_timeout_seconds: float = 30.0,
        database: str | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.dedup_window_seconds = dedup_window_seconds
        self.lease_seconds = lease_seconds
        self.busy_timeout_seconds = busy_timeout_seconds
        self.store: SqliteLedger | PostgresLedger = (
            PostgresLedger(database)
            if database
            else SqliteLedger(self.path, busy_timeout_seconds=busy_timeout_seconds)
        )
        with self._transaction() as db:
            self.store.lock(db, "schema")  # two hosts starting at once: one creates the tables
            create_tables(db, self.store.dialect, label=self.store.label)

    @classmethod
    def in_archive(
        cls, archive_dir: str | Path, *, database: str | None = None, **kwargs: Any
    ) -> Intake:
        """The archive's ledger: ``intake.sqlite`` in it, or the configured PostgreSQL."""
        database = database or configured_database()
        return cls(Path(archive_dir) / INTAKE_FILE, database=database, **kwargs)

    def keep_open(self) -> None:
        """For a long-lived process that does not fork: the SQLite ledger keeps an idle
        connection between transactions (:meth:`SqliteLedger.keep_open`) until :meth:`release`."""
        self.store.keep_open()

    def release(self) -> None:
        """Close what :meth:`keep_open` held."""
        self.store.release()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One atomic step; the store's errors arrive as :class:`ArchiveError`."""
        with self.store.transaction() as db:
            yield db

    # -- intake ------------------------------------------------------------------------------

    def accept(
        self, planned: Sequence[PlannedRun], *, source: str, now: float | None = None
    ) -> list[Decision]:
        """Record a delivery: queue what is new, join duplicates, note resolutions. Atomic."""
        now = time.time() if now is None else now
        decisions = []
        with self._transaction() as db:
            # Deliveries for the same alert group and runbook on several hosts at once: one at a
            # time (a firing and its resolution too). Keys in order, so two never deadlock.
            for key in sorted({f"{each.group_key}\n{each.runbook}" for each in planned}):
                self.store.lock(db, key)
            for each in planned:
                if each.resolved:
                    # A later firing of the same alerts is a new incident, not a duplicate.
                    db.execute(
                        "UPDATE runs SET closed = 1 WHERE group_key = ? AND runbook = ?",
                        (each.group_key, each.runbook),
                    )
                    ended = (each.ended_at or datetime.now(UTC)).timestamp()
                    db.execute(
                        "INSERT INTO resolutions VALUES (?, ?, ?) ON CONFLICT (incident_id) "
                        "DO UPDATE SET ended_at = excluded.ended_at, "
                        "recorded_at = excluded.recorded_at",
                        (each.incident_id, ended, now),
                    )
                    decisions.append(Decision(action="resolved", **_names(each)))
                    continue
                earlier = db.execute(
                    "SELECT task_id FROM runs WHERE dedup_key = ? AND closed = 0 "
                    "AND accepted_at > ? ORDER BY accepted_at DESC LIMIT 1",
                    (each.dedup_key, now - self.dedup_window_seconds),
                ).fetchone()
                if earlier is not None:
                    decisions.append(
                        Decision(action="deduplicated", task_id=earlier["task_id"], **_names(each))
                    )
                    continue
                run = QueuedRun(
                    task_id=uuid.uuid4().hex,
                    runbook=each.runbook,
                    incident_id=each.incident_id,
                    payload=each.payload,
                    source=source,
                    accepted_at=now,
                    state="queued",
                )
                db.execute(
                    "INSERT INTO runs (task_id, dedup_key, group_key, runbook, incident_id, "
                    "fingerprints, payload, source, state, accepted_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                    (
                        run.task_id,
                        each.dedup_key,
                        each.group_key,
                        each.runbook,
                        each.incident_id,
                        json.dumps(each.firing),
                        json.dumps(each.payload),
                        source,
                        now,
                    ),
                )
                # Firing again: an earlier "resolved" no longer describes the incident.
                db.execute("DELETE FROM resolutions WHERE incident_id = ?", (each.incident_id,))
                decisions.append(
                    Decision(action="queued", task_id=run.task_id, run=run, **_names(each))
                )
        return decisions

    # -- workers -----------------------------------------------------------------------------

    def claim(
        self, run: QueuedRun, *, owner: str | None = None, now: float | None = None
    ) -> QueuedRun | None:
        """Take a run for execution; None if it already ran or a live worker has it.

        A run the ledger does not know (a queue that outlived its ledger, or a worker whose
        archive is not the one that accepted it) is recorded and claimed, never dropped.
        """
        owner = owner or owner_id()
        now = time.time() if now is None else now
        select = "SELECT * FROM runs WHERE task_id = ?" + self.store.for_update
        with self._transaction() as db:
            row = db.execute(select, (run.task_id,)).fetchone()
            if row is None:
                # Two workers with the same unknown run: the second's insert waits, does nothing.
                db.execute(
                    "INSERT INTO runs (task_id, dedup_key, group_key, runbook, incident_id, "
                    "fingerprints, payload, source, state, accepted_at) "
                    "VALUES (?, '', '', ?, ?, '[]', ?, ?, 'queued', ?) "
                    "ON CONFLICT (task_id) DO NOTHING",
                    (
                        run.task_id,
                        run.runbook,
                        run.incident_id,
                        json.dumps(run.payload),
                        run.source,
                        run.accepted_at,
                    ),
                )
                row = db.execute(select, (run.task_id,)).fetchone()
            if row["state"] != "queued" and not self._abandoned(row, now):
                return None
            db.execute(
                "UPDATE runs SET state = 'running', owner = ?, claimed_at = ?, heartbeat_at = ?, "
                "attempts = attempts + 1 WHERE task_id = ?",
                (owner, now, now, run.task_id),
            )
            claimed = db.execute("SELECT * FROM runs WHERE task_id = ?", (run.task_id,)).fetchone()
        return _queued_run(claimed)

    def _abandoned(self, row: Mapping[str, Any], now: float) -> bool:
        if row["state"] != "running":
            return False
        silent = now - (row["heartbeat_at"] or 0.0) > self.lease_seconds
        return silent or owner_is_dead(row["owner"])

    @contextmanager
    def heartbeat(
        self, task_id: str, *, owner: str | None = None, interval: float = HEARTBEAT_SECONDS
    ) -> Iterator[None]:
        """Renew the claim every ``interval`` seconds while the body runs."""
        owner = owner or owner_id()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    with self._transaction() as db:
                        db.execute(
                            "UPDATE runs SET heartbeat_at = ? WHERE task_id = ? AND owner = ?",
                            (time.time(), task_id, owner),
                        )
                except ArchiveError:
                    continue  # a busy ledger: the next beat will do, the lease is long
            self.store.close()  # this thread's connection, if the store keeps one

        thread = threading.Thread(target=beat, name=f"heartbeat-{task_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def finish(
        self,
        task_id: str,
        state: RunState,
        *,
        owner: str | None = None,
        run_ids: Sequence[str] = (),
        error: str | None = None,
    ) -> bool:
        """Record how a claimed run ended; False if another worker took it over meanwhile."""
        owner = owner or owner_id()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET state = ?, finished_at = ?, run_ids = ?, error = ? "
                "WHERE task_id = ? AND owner = ?",
                (state, time.time(), json.dumps(list(run_ids)), error, task_id, owner),
            )
            return cursor.rowcount == 1

    def resolution(self, incident: str) -> datetime | None:
        """When the incident was reported resolved, if it was and has not fired again since."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT ended_at FROM resolutions WHERE incident_id = ?", (incident,)
            ).fetchone()
        return datetime.fromtimestamp(row["ended_at"], UTC) if row else None

    # -- recovery ----------------------------------------------------------------------------

    def orphans(self, *, pending: set[str], now: float | None = None) -> list[QueuedRun]:
        """Runs to hand out again: queued but lost from the queue, or claimed by a dead worker.

        ``pending`` holds the task ids the queue still holds. Also forgets old finished runs
        (beyond the de-duplication window) and old resolutions.
        """
        now = time.time() if now is None else now
        found = []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE state IN ('queued', 'running') ORDER BY accepted_at"
            ).fetchall()
            for row in rows:
                if row["task_id"] in pending:  # queued, or already handed out again
                    continue
                lost = row["state"] == "queued" and row["accepted_at"] < now - REQUEUE_GRACE_SECONDS
                if lost or self._abandoned(row, now):
                    found.append(_queued_run(row))
            keep = max(self.dedup_window_seconds, _KEEP_FINISHED_SECONDS)
            db.execute(
                "DELETE FROM runs WHERE state IN ('succeeded', 'failed') AND accepted_at < ?",
                (now - keep,),
            )
            db.execute(
                "DELETE FROM resolutions WHERE recorded_at < ?", (now - _KEEP_RESOLUTIONS_SECONDS,)
            )
        return found

    # -- reading -----------------------------------------------------------------------------

    def get(self, task_id: str) -> QueuedRun | None:
        with self._transaction() as db:
            row = db.execute("SELECT * FROM runs WHERE task_id = ?", (task_id,)).fetchone()
        return _queued_run(row) if row else None

    def counts(self) -> dict[str, int]:
        """How many runs the ledger holds in each state."""
        with self._transaction() as db:
            rows = db.execute("SELECT state, count(*) AS n FROM runs GROUP BY state").fetchall()
        return {"queued": 0, "running": 0, "succeeded": 0, "failed": 0} | {
            row["state"]: row["n"] for row in rows
        }

    def runs(self, *, state: RunState | None = None) -> list[QueuedRun]:
        """Every run the ledger holds (oldest first), or those in one state."""
        query, values = "SELECT * FROM runs", ()
        if state is not None:
            query, values = query + " WHERE state = ?", (state,)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY accepted_at", values).fetchall()
        return [_queued_run(row) for row in rows]


def _names(each: PlannedRun) -> dict[str, str]:
    return {"incident_id": each.incident_id, "runbook": each.runbook}


def _queued_run(row: Mapping[str, Any]) -> QueuedRun:
    return QueuedRun(
        task_id=row["task_id"],
        runbook=row["runbook"],
        incident_id=row["incident_id"],
        payload=json.loads(row["payload"]),
        source=row["source"],
        accepted_at=row["accepted_at"],
        state=row["state"],
        owner=row["owner"],
        claimed_at=row["claimed_at"],
        attempts=row["attempts"],
        run_ids=tuple(json.loads(row["run_ids"] or "[]")),
        error=row["error"],
    )
