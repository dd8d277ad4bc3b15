"""low-disk-space on real exporters: a tmpfs filled with real files, by bytes and by inodes.

node_exporter reports the mounted tmpfs, a live Prometheus scrapes it every second, and the
workbook, run on the alert as `workbook run` does, must name the mountpoint, the kind (bytes or
inodes) and a time to full. Skipped with the reason where mounting is not allowed (CI is root).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from workbooks.archive.store import Archive
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import load_config
from workbooks.running.runner import run_alert
from workbooks.synthetic.exporters import NODE_EXPORTER, missing_binaries, start_node_exporter
from workbooks.synthetic.hostload import SteadyFiller, Tmpfs, fill_files, mounted_tmpfs
from workbooks.synthetic.live import (
    LivePrometheus,
    NotPermittedError,
    ScrapeTarget,
    start_live_prometheus,
)

HOST = "disk-host-1"
FLAT_SECONDS = 12  # before anything fills: the level the growth starts from
FILL_SECONDS = 22  # of filling before the workbook runs (it keeps filling during the run)


def _need() -> None:
    missing = missing_binaries([NODE_EXPORTER, "prometheus"])
    if missing:
        pytest.skip(
            f"needs the Debian packages of {', '.join(missing)} (scripts/install-system-deps)"
        )


def _only(mountpoint: Path) -> str:
    """node_exporter's exclusion of every mount point but ``mountpoint``.

    The machine's own disks grow as other work writes to them, and the tmpfs of a test running
    beside this one on another worker (test_hostile.py mounts one) may be fuller than ours: this
    test must read only the tmpfs it mounted. Go's regexp has no lookahead, so "anything else"
    is spelled out: a path that leaves ``mountpoint`` at some character, or goes on past it.
    """
    path = str(mountpoint)
    leaves = [
        re.escape(path[:i]) + "($|[^" + (ch if ch.isalnum() else "\\" + ch) + "])"
        for i, ch in enumerate(path)
    ]
    return "^(" + "|".join(leaves) + "|" + re.escape(path) + ".)"


@contextmanager
def _lab(tmp_path: Path, *, size_bytes: int, inodes: int) -> Iterator[tuple[Tmpfs, LivePrometheus]]:
    _need()
    with ExitStack() as stack:
        try:
            disk = stack.enter_context(
                mounted_tmpfs(tmp_path / "disk", size_bytes=size_bytes, inodes=inodes)
            )
        except NotPermittedError as exc:
            pytest.skip(str(exc))
        node = stack.enter_context(
            start_node_exporter(tmp_path / "node", mount_points_exclude=_only(disk.path))
        )
        prometheus = stack.enter_context(
            start_live_prometheus(
                [ScrapeTarget("node", node.address, {"instance": HOST})], tmp_path / "prom"
            )
        )
        prometheus.wait_for(f'node_filesystem_size_bytes{{mountpoint="{disk.path}"}}')
        time.sleep(FLAT_SECONDS)
        yield disk, prometheus


def _payload(disk: Tmpfs, alertname: str, starts_at: datetime) -> dict[str, Any]:
    labels = {
        "alertname": alertname,
        "severity": "warning",
        "instance": HOST,
        "mountpoint": str(disk.path),
        "device": "tmpfs",
    }
    return {
        "receiver": "workbooks",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": f"{disk.path} on {HOST} is filling"},
                "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": "0123456789abcdef",
            }
        ],
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
    }


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus: LivePrometheus, payload: dict
) -> list[dict[str, Any]]:
    # One point a second: the lab's minute is a fleet's hours.
    config_file = tmp_path / "workbooks.yaml"
    config_file.write_text(
        f"archive: {tmp_path / 'archive'}\nprometheus:\n  min_step_seconds: 1\n", encoding="utf-8"
    )
    monkeypatch.setenv("WORKBOOKS_CONFIG", str(config_file))
    config = load_config()
    archive = Archive(config.archive_dir)
    (record,) = run_alert(
        parse_alert_group(payload),
        config=config,
        archive=archive,
        source=prometheus.url,
        runbook_id="low-disk-space",
        lookback="1m",
        baseline="1h",
    )
    assert record.status == "succeeded", record.error
    return archive.show(record.run_id)["findings"]


def test_a_tmpfs_filling_by_bytes_is_named_with_its_time_to_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _lab(tmp_path, size_bytes=8 << 20, inodes=2000) as (disk, prometheus):
        onset = datetime.now(UTC)
        with SteadyFiller(disk.path, bytes_per_second=128 << 10) as filler:
            time.sleep(FILL_SECONDS)
            findings = _run(
                tmp_path, monkeypatch, prometheus, _payload(disk, "HostOutOfDiskSpace", onset)
            )
            assert not filler.full
    top = findings[0]
    assert top["subject"] == {"mountpoint": str(disk.path), "instance": HOST}
    assert top["severity"] == "critical"  # full within about a minute
    assert top["cause"] == "limit"
    assert f"{disk.path} fills by bytes at" in top["title"]
    assert "full in about" in top["title"]
    assert "sudo du -xh" in top["recommendation"]


def test_a_tmpfs_running_out_of_inodes_while_bytes_are_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _lab(tmp_path, size_bytes=8 << 20, inodes=400) as (disk, prometheus):
        onset = datetime.now(UTC)
        stop = threading.Event()

        def touch_files() -> None:  # about 8 empty files a second: inodes go, bytes stay
            while not stop.wait(0.125):
                fill_files(disk.path, 1)

        toucher = threading.Thread(target=touch_files, daemon=True)
        toucher.start()
        try:
            time.sleep(FILL_SECONDS)
            findings = _run(
                tmp_path, monkeypatch, prometheus, _payload(disk, "HostOutOfInodes", onset)
            )
        finally:
            stop.set()
            toucher.join(timeout=5)
    top = findings[0]
    assert top["subject"] == {"mountpoint": str(disk.path), "instance": HOST}
    assert top["severity"] == "critical"
    assert f"{disk.path} fills by inodes at" in top["title"]
    assert "full in about" in top["title"] and "of its bytes are used" in top["title"]
    assert "find " in top["recommendation"] and "-type f" in top["recommendation"]
