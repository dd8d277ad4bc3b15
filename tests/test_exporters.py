"""The real-exporter lab: the Debian exporters scraped every second by a real Prometheus, with
real trouble planted (a full tmpfs, a busy process, idle transactions, a lock pile, a failing
probe), and the metric each runbook will read shows it, with the labels docs/metrics.md names.

A step the machine forbids (mounting needs root) skips with the reason; a missing package skips
naming it (scripts/install-system-deps installs them all).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from workbooks.synthetic.exporters import (
    BLACKBOX_EXPORTER,
    NODE_EXPORTER,
    POSTGRES_EXPORTER,
    SwitchableHttpServer,
    binary_version,
    missing_binaries,
    start_blackbox_exporter,
    start_node_exporter,
    start_postgres_exporter,
)
from workbooks.synthetic.hostload import (
    SteadyFiller,
    fill_bytes,
    fill_files,
    mounted_tmpfs,
    start_busy_process,
    start_service_instance,
)
from workbooks.synthetic.live import (
    LabError,
    LivePrometheus,
    NotPermittedError,
    ScrapeTarget,
    free_port,
    probe_target,
    start_live_prometheus,
    start_process,
)
from workbooks.synthetic.postgres import (
    PostgresCluster,
    hold_lock,
    idle_in_transaction,
    postgres_bindir,
    start_postgres,
)

ROOT = Path(__file__).resolve().parents[1]
HOST = "host-a"  # the node's `instance` label, as a fleet would name it


def _need(*binaries: str) -> None:
    missing = missing_binaries([*binaries, "prometheus"])
    if missing:
        packages = ", ".join(missing)
        pytest.skip(f"needs the Debian packages of {packages} (scripts/install-system-deps)")


def _labels(prometheus: LivePrometheus, expr: str) -> list[dict[str, str]]:
    return [item["metric"] for item in prometheus.query(expr)]


def test_a_process_that_fails_to_start_raises_with_its_log_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(LabError, match=r"(?s)exited with 3.*boom"):
        start_process("broken", ["sh", "-c", "echo boom; exit 3"], tmp_path, ready=lambda: False)
    with pytest.raises(LabError, match="install it with scripts/install-system-deps"):
        start_process("absent", ["no-such-binary-here"], tmp_path, ready=lambda: True)


def test_tmpfs_filled_by_bytes_then_by_inodes(tmp_path: Path) -> None:
    _need(NODE_EXPORTER)
    mountpoint = tmp_path / "disk"
    with ExitStack() as stack:
        try:
            disk = stack.enter_context(mounted_tmpfs(mountpoint, size_bytes=8 << 20, inodes=200))
        except NotPermittedError as exc:
            pytest.skip(str(exc))
        node = stack.enter_context(start_node_exporter(tmp_path / "node"))
        prometheus = stack.enter_context(
            start_live_prometheus(
                [ScrapeTarget("node", node.address, {"instance": HOST})], tmp_path / "prom"
            )
        )
        selector = f'instance="{HOST}",mountpoint="{disk.path}"'
        size = prometheus.wait_for(f"node_filesystem_size_bytes{{{selector}}}")
        assert size == [8 << 20]
        (labels,) = _labels(prometheus, f"node_filesystem_avail_bytes{{{selector}}}")
        assert labels == {
            "__name__": "node_filesystem_avail_bytes",
            "device": "tmpfs",
            "fstype": "tmpfs",
            "instance": HOST,
            "job": "node",
            "mountpoint": str(disk.path),
        }
        assert list(prometheus.values(f"node_filesystem_readonly{{{selector}}}").values()) == [0]

        # Steady growth: the slope the runbook projects its time to full from.
        with SteadyFiller(disk.path, bytes_per_second=512 << 10):
            prometheus.wait_for(
                f"deriv(node_filesystem_avail_bytes{{{selector}}}[10s])",
                lambda v: bool(v) and v[0] < -200_000,
                timeout_seconds=30,
            )
        fill_bytes(disk.path, 8 << 20)  # the rest: stops at ENOSPC
        avail = prometheus.wait_for(
            f"node_filesystem_avail_bytes{{{selector}}}",
            lambda v: bool(v) and v[0] < 256 << 10,
            timeout_seconds=20,
        )
        assert avail[0] < 0.05 * (8 << 20)

        # Inodes run out while bytes are free: emptied, then filled with empty files only.
        for path in disk.path.iterdir():
            path.unlink()
        created = fill_files(disk.path, 1000)
        assert 150 < created < 200
        prometheus.wait_for(
            f"node_filesystem_files_free{{{selector}}}",
            lambda v: v == [0.0],
            timeout_seconds=20,
        )
        assert list(prometheus.values(f"node_filesystem_files{{{selector}}}").values()) == [200]
        free_bytes = prometheus.wait_for(f"node_filesystem_avail_bytes{{{selector}}}")
        assert free_bytes[0] > 7 << 20
    assert not any(line.split()[1] == str(mountpoint) for line in _mounts()), "left mounted"


def _mounts() -> list[str]:
    return Path("/proc/self/mounts").read_text().splitlines()


def test_busy_neighbour_then_busy_service_instance(tmp_path: Path) -> None:
    _need(NODE_EXPORTER)
    busy_port = free_port()  # api-1 is scraped from the start, down until it runs
    with ExitStack() as stack:
        node = stack.enter_context(start_node_exporter(tmp_path / "node"))
        quiet = stack.enter_context(start_service_instance(tmp_path, name="api-0"))
        targets = [
            ScrapeTarget("node", node.address, {"instance": HOST}),
            ScrapeTarget("svc", quiet.address, {"service": "svc-cpu", "instance": "api-0"}),
            ScrapeTarget(
                "svc", f"127.0.0.1:{busy_port}", {"service": "svc-cpu", "instance": "api-1"}
            ),
        ]
        prometheus = stack.enter_context(start_live_prometheus(targets, tmp_path / "prom"))
        host_user = f'sum(rate(node_cpu_seconds_total{{instance="{HOST}",mode="user"}}[5s]))'
        service_cpu = 'rate(process_cpu_seconds_total{service="svc-cpu",instance="%s"}[5s])'
        prometheus.wait_for(f'node_cpu_seconds_total{{instance="{HOST}"}}')
        cpu = _labels(prometheus, f'node_cpu_seconds_total{{instance="{HOST}",mode="user"}}')
        assert set(cpu[0]) == {"__name__", "cpu", "instance", "job", "mode"}
        modes = {m["mode"] for m in _labels(prometheus, 'node_cpu_seconds_total{cpu="0"}')}
        assert {"idle", "user", "system", "iowait", "steal"} <= modes
        assert prometheus.values(f'node_load1{{instance="{HOST}"}}') != {}

        # A neighbour burns a core: the host is busy, the service's own CPU stays low.
        with start_busy_process(tmp_path):
            prometheus.wait_for(host_user, lambda v: bool(v) and v[0] > 0.5, timeout_seconds=60)
            assert prometheus.wait_for(service_cpu % "api-0")[0] < 0.2
        assert prometheus.values('up{instance="api-1"}') == {
            (("__name__", "up"), ("instance", "api-1"), ("job", "svc"), ("service", "svc-cpu")): 0
        }

        # Now one service instance is the busy one.
        stack.enter_context(
            start_service_instance(tmp_path, busy=True, name="api-1", port=busy_port)
        )
        prometheus.wait_for(
            # a whole core when the machine is idle; 0.4 leaves room for other work on it
            service_cpu % "api-1",
            lambda v: bool(v) and v[0] > 0.4,
            timeout_seconds=60,
        )
        assert prometheus.wait_for(service_cpu % "api-0")[0] < 0.2


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A PostgreSQL with max_connections=12, its exporter, and a Prometheus scraping it every 2 s
    (with the database down, each scrape of postgres_exporter 0.11 takes a full second)."""
    if postgres_bindir() is None:
        pytest.skip("needs Debian's postgresql (scripts/install-system-deps)")
    _need(POSTGRES_EXPORTER)
    workdir = tmp_path_factory.mktemp("db")
    cluster = start_postgres(workdir / "pg", max_connections=12)
    started: list = [cluster]
    try:
        exporter = start_postgres_exporter(cluster.dsn, workdir / "exporter")
        started.append(exporter)
        target = ScrapeTarget("postgres", exporter.address, {"instance": "db-main"})
        prometheus = start_live_prometheus([target], workdir / "prom", interval_seconds=2)
        started.append(prometheus)
        prometheus.wait_for('pg_up{instance="db-main"} == 1')
        yield cluster, prometheus
    finally:
        for live in reversed(started):
            live.stop()


def test_idle_in_transaction_sessions_exhaust_connections(database: tuple) -> None:
    cluster, prometheus = database
    cluster: PostgresCluster
    idle = (
        'pg_stat_activity_count{instance="db-main",datname="postgres",state="idle in transaction"}'
    )
    (labels,) = _labels(prometheus, idle)
    assert labels == {
        "__name__": "pg_stat_activity_count",
        "datname": "postgres",
        "instance": "db-main",
        "job": "postgres",
        "server": cluster.server_label,
        "state": "idle in transaction",
    }
    states = {m["state"] for m in _labels(prometheus, "pg_stat_activity_count")}
    assert states == {
        *("active", "idle", "idle in transaction", "idle in transaction (aborted)"),
        *("fastpath function call", "disabled"),
    }
    assert prometheus.values("pg_settings_max_connections") != {}

    opened = []
    try:
        with pytest.raises(LabError, match="too many clients"):
            for _ in range(20):
                opened.append(idle_in_transaction(cluster, 1))
        # The exporter keeps its own two connections: it still reports with the server full.
        # Polled every 20 ms for 40 s (idle, and beside three busy loops) it held two, but under
        # the whole suite's load CI once found a third slot taken when the tenth session came
        # (one scrape overlapping a slow one could open it: postgres_exporter issue 1228).
        assert 12 - 3 <= len(opened) <= 12 - 2
        prometheus.wait_for(idle, lambda v: v == [len(opened)], timeout_seconds=20)
        in_use = (
            "sum by (instance) (pg_stat_activity_count{instance='db-main'})"
            " / on(instance) pg_settings_max_connections"
        )
        assert prometheus.wait_for(in_use, lambda v: bool(v) and v[0] >= 0.9)
        prometheus.wait_for(
            'pg_stat_activity_max_tx_duration{datname="postgres",state="idle in transaction"}',
            lambda v: bool(v) and v[0] > 2,
            timeout_seconds=20,
        )
        assert prometheus.values('pg_up{instance="db-main"}') == {
            (("__name__", "pg_up"), ("instance", "db-main"), ("job", "postgres")): 1.0
        }
    finally:
        for sessions in opened:
            sessions.close()
    prometheus.wait_for(idle, lambda v: v == [0.0], timeout_seconds=20)


def test_a_held_lock_piles_up_waiting_sessions(database: tuple) -> None:
    cluster, prometheus = database
    locks = 'pg_locks_count{instance="db-main",datname="postgres",mode="%s"}'
    modes = {m["mode"] for m in _labels(prometheus, 'pg_locks_count{datname="postgres"}')}
    assert modes == {
        *("accessexclusivelock", "accesssharelock", "exclusivelock", "rowexclusivelock"),
        *("rowsharelock", "sharelock", "sharerowexclusivelock", "shareupdateexclusivelock"),
        "sireadlock",
    }
    with hold_lock(cluster, waiters=3):
        assert cluster.waiting_on_locks() == 3
        prometheus.wait_for(locks % "accessexclusivelock", lambda v: v == [1.0])
        # Waiting (not granted) AccessShare locks are counted too.
        prometheus.wait_for(locks % "accesssharelock", lambda v: bool(v) and v[0] >= 3)
        prometheus.wait_for(
            'pg_stat_activity_count{datname="postgres",state="active"}',
            lambda v: bool(v) and v[0] >= 3,
        )
        prometheus.wait_for(
            'pg_stat_activity_max_tx_duration{datname="postgres",state="idle in transaction"}',
            lambda v: bool(v) and v[0] > 1,
        )
    prometheus.wait_for(locks % "accessexclusivelock", lambda v: v == [0.0])
    counters = _labels(prometheus, 'pg_stat_database_xact_commit{datname="postgres"}')
    assert set(counters[0]) == {"__name__", "datid", "datname", "instance", "job", "server"}
    assert _labels(prometheus, "pg_stat_database_deadlocks_total") == []
    assert _labels(prometheus, "pg_stat_database_deadlocks") != []


def test_database_down_sets_pg_up_to_zero(database: tuple) -> None:
    cluster, prometheus = database
    cluster.server.stop()
    prometheus.wait_for('pg_up{instance="db-main"}', lambda v: v == [0.0], timeout_seconds=20)
    # The exporter itself is still up: only pg_up tells the database is down.
    assert prometheus.values('up{instance="db-main"}') != {}
    assert list(prometheus.values('up{instance="db-main"}').values()) == [1.0]


def test_failing_probe_and_a_target_that_stops(tmp_path: Path) -> None:
    _need(BLACKBOX_EXPORTER)
    with (
        SwitchableHttpServer() as web,
        start_blackbox_exporter(tmp_path / "blackbox") as blackbox,
        start_service_instance(tmp_path, name="api-0") as instance,
        start_live_prometheus(
            [
                probe_target("probe", blackbox.address, web.url, {"service": "svc-web"}),
                ScrapeTarget("svc", instance.address, {"service": "svc-web", "instance": "api-0"}),
            ],
            tmp_path / "prom",
        ) as prometheus,
    ):
        probe = f'probe_success{{service="svc-web",instance="{web.url}"}}'
        prometheus.wait_for(probe, lambda v: v == [1.0])
        (labels,) = _labels(prometheus, probe)
        assert labels == {
            "__name__": "probe_success",
            "instance": web.url,
            "job": "probe",
            "service": "svc-web",
        }
        assert prometheus.values(f'probe_duration_seconds{{instance="{web.url}"}}') != {}
        web.failing = True
        prometheus.wait_for(probe, lambda v: v == [0.0], timeout_seconds=20)
        status = prometheus.values(f'probe_http_status_code{{instance="{web.url}"}}')
        assert list(status.values()) == [503.0]

        up = 'up{service="svc-web",instance="api-0"}'
        prometheus.wait_for(up, lambda v: v == [1.0])
        assert prometheus.values('process_start_time_seconds{service="svc-web"}') != {}
        instance.stop()
        prometheus.wait_for(up, lambda v: v == [0.0], timeout_seconds=20)


@pytest.mark.parametrize("binary", [NODE_EXPORTER, POSTGRES_EXPORTER, BLACKBOX_EXPORTER])
def test_docs_name_the_versions_the_facts_were_verified_on(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"needs {binary} (scripts/install-system-deps)")
    version = binary_version(binary)
    docs = (ROOT / "docs" / "metrics.md").read_text()
    verified = re.search(rf"`{binary}` (\S+)", docs)
    assert verified, f"docs/metrics.md does not say which {binary} it was verified on"
    assert verified.group(1) == version, (
        f"{binary} is now {version}; re-run tests/test_exporters.py and update docs/metrics.md"
    )
