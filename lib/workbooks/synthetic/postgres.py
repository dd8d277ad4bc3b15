"""A throwaway PostgreSQL cluster (Debian's `postgresql`) and the sessions that plant trouble in it.

    with start_postgres(tmp_path / "pg", max_connections=20) as cluster:
        with idle_in_transaction(cluster, 12):      # 12 sessions left `idle in transaction`
            ...
        with hold_lock(cluster, waiters=3):         # one holds a table lock, 3 wait on it
            ...

Sessions are `psql` processes fed through stdin, so no database driver is needed. PostgreSQL
refuses to run as root: as root the cluster runs as the `postgres` user, in a data directory of
its own under the system temp folder (pytest's folders are private to root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from workbooks.synthetic.live import LabError, LiveProcess, free_port, start_process

SUPERUSER = "postgres"
LAB_TABLE = "incident_lab"


def postgres_bindir() -> Path | None:
    """The folder holding initdb, postgres and psql: on PATH, or Debian's newest
    /usr/lib/postgresql/N/bin; None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # Debian's binaries may be linked from elsewhere
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _run_as() -> str | None:
    return SUPERUSER if os.geteuid() == 0 else None


@dataclass
class PsqlSession:
    """One database session: a psql process kept open, fed statements through stdin."""

    process: subprocess.Popen[bytes]
    log_path: Path
    statements: int = 0

    def execute(self, sql: str, *, wait: bool = True, timeout_seconds: float = 15.0) -> None:
        """Send `sql`; with `wait`, return once psql has run it (a marker echoed after it).

        Without `wait` (a statement that blocks on a lock), return at once.
        """
        if self.process.poll() is not None or self.process.stdin is None:
            raise LabError(f"the psql session has ended; its output:\n{self.output()}")
        self.statements += 1
        marker = f"__statement_{self.statements}_done__"
        self.process.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {marker}\n".encode())
        self.process.stdin.flush()
        if not wait:
            return
        started = time.monotonic()
        while marker not in self.output():
            if self.process.poll() is not None or time.monotonic() - started > timeout_seconds:
                raise LabError(f"psql did not run {sql!r}; its output:\n{self.output()[-2000:]}")
            time.sleep(0.02)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """End the session (an open transaction is rolled back by the server)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()  # blocked on a lock: psql waits for its statement first
            self.process.wait()


@dataclass
class PostgresCluster:
    """A running PostgreSQL on 127.0.0.1:`port`, superuser `postgres`, trust authentication."""

    server: LiveProcess
    port: int
    datadir: Path
    bindir: Path
    workdir: Path
    sessions_opened: int = field(default=0, repr=False)

    @property
    def dsn(self) -> str:
        """The DATA_SOURCE_NAME postgres_exporter reads."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres?sslmode=disable"

    @property
    def server_label(self) -> str:
        """The `server` label postgres_exporter puts on its series for this cluster."""
        return f"127.0.0.1:{self.port}"

    def _psql_argv(self, database: str) -> list[str]:
        return [
            str(self.bindir / "psql"),
            *("-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port)),
            *("-U", SUPERUSER, "-d", database),
        ]

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run `sql` in a fresh session and return its unaligned output."""
        completed = subprocess.run(
            [*self._psql_argv(database), "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if completed.returncode != 0:
            raise LabError(f"psql {sql!r} failed: {completed.stderr.strip()}")
        return completed.stdout.strip()

    def session(self, *, database: str = "postgres") -> PsqlSession:
        """Open a session kept alive until `close()`; raises LabError when it cannot connect
        (for instance "sorry, too many clients already")."""
        self.sessions_opened += 1
        log_path = self.workdir / f"session-{self.sessions_opened}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                self._psql_argv(database),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        session = PsqlSession(process, log_path)
        try:
            session.execute("SELECT 1")  # connected, or the error is in its output
        except LabError:
            session.close()
            raise
        return session

    def waiting_on_locks(self) -> int:
        """How many sessions wait on a lock now (pg_stat_activity.wait_event_type = 'Lock')."""
        return int(self.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type='Lock'"))

    def stop(self) -> None:
        """Fast shutdown (SIGINT ends open sessions), then remove the data directory."""
        self.server.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(
    workdir: Path, *, max_connections: int = 20, settings: dict[str, str] | None = None
) -> PostgresCluster:
    """initdb a fresh cluster and start it on a free loopback port (no Unix socket).

    A small `max_connections` lets a test exhaust connections with a handful of sessions.
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise LabError("PostgreSQL is not installed; run scripts/install-system-deps")
    workdir.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    datadir = Path(tempfile.mkdtemp(prefix="workbooks-pg-")) if user else workdir / "data"
    if user:
        shutil.chown(datadir, user=user)
    datadir = datadir / "cluster"
    initdb = subprocess.run(
        [
            *(str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", SUPERUSER),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        ],
        capture_output=True,
        text=True,
        user=user,
        timeout=120,
        check=False,
    )
    if initdb.returncode != 0:
        shutil.rmtree(datadir.parent if user else datadir, ignore_errors=True)
        raise LabError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
    port = free_port()
    options = {"listen_addresses": "127.0.0.1", "max_connections": str(max_connections)}
    options |= {"unix_socket_directories": "", "fsync": "off", **(settings or {})}
    argv = [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port)]
    for name, value in options.items():
        argv += ["-c", f"{name}={value}"]
    ready_argv = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    ready_argv += ["-U", SUPERUSER]
    try:
        server = start_process(
            "postgres",
            argv,
            workdir,
            address=f"127.0.0.1:{port}",
            user=user,
            # SIGTERM would wait for every client to leave; SIGINT ends their sessions.
            stop_signal=signal.SIGINT,
            ready=lambda: subprocess.run(ready_argv, check=False, timeout=5).returncode == 0,
        )
    except LabError:
        shutil.rmtree(datadir.parent if user else datadir, ignore_errors=True)
        raise
    return PostgresCluster(server, port, datadir.parent if user else datadir, bindir, workdir)


@dataclass
class Sessions:
    """Sessions a helper opened; `close()` ends them all."""

    sessions: list[PsqlSession]

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def idle_in_transaction(
    cluster: PostgresCluster, count: int, *, database: str = "postgres"
) -> Sessions:
    """Open `count` sessions that begin a transaction, take a transaction id, and sit idle.

    pg_stat_activity shows them as `idle in transaction` until closed; opening more sessions than
    the server allows raises LabError ("too many clients") after closing those it opened.
    """
    opened: list[PsqlSession] = []
    try:
        for _ in range(count):
            session = cluster.session(database=database)
            opened.append(session)
            session.execute("BEGIN; SELECT txid_current()")
    except LabError:
        Sessions(opened).close()
        raise
    return Sessions(opened)


def hold_lock(
    cluster: PostgresCluster,
    *,
    waiters: int = 3,
    table: str = LAB_TABLE,
    database: str = "postgres",
    timeout_seconds: float = 15.0,
) -> Sessions:
    """One session takes an ACCESS EXCLUSIVE lock on `table` in an open transaction and keeps
    it; `waiters` sessions then read the table and wait. Returns once all of them wait."""
    cluster.psql(
        f"CREATE TABLE IF NOT EXISTS {table} (id int); INSERT INTO {table} VALUES (1)",
        database=database,
    )
    opened: list[PsqlSession] = []
    try:
        holder = cluster.session(database=database)
        opened.append(holder)
        holder.execute(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        for _ in range(waiters):
            waiter = cluster.session(database=database)
            opened.append(waiter)
            waiter.execute(f"SELECT count(*) FROM {table}", wait=False)
        started = time.monotonic()
        while cluster.waiting_on_locks() < waiters:
            if time.monotonic() - started > timeout_seconds:
                raise LabError(
                    f"{waiters} sessions should wait on the lock on {table}; "
                    f"{cluster.waiting_on_locks()} do after {timeout_seconds:.0f}s"
                )
            time.sleep(0.1)
    except LabError:
        Sessions(opened).close()
        raise
    return Sessions(opened)
