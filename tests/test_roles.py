"""Roles: `workbook serve --role intake` runs nothing, `workbook worker` runs only what Redis holds,
and each refuses, saying what to set, when it could not work as set up."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from conftest import run_cli
from test_service import (  # noqa: F401  (redis_url: the fixture, a real redis-server)
    ServiceThread,
    alert,
    delivery,
    redis_url,
    service_config,
    wait_for,
)
from workbooks.core.config import Config, ServiceSettings
from workbooks.core.errors import ConfigError
from workbooks.service.app import Service
from workbooks.service.roles import check_role


def test_worker_and_intake_refuse_without_a_shared_queue(tmp_path: Path) -> None:
    result = run_cli("worker", archive=tmp_path / "archive", env={"WORKBOOKS_REDIS_URL": ""})
    assert result.exit_code != 0
    assert "WORKBOOKS_REDIS_URL" in result.stderr and "Traceback" not in result.stderr
    served = run_cli(
        "serve", "--role", "intake", "--prometheus", "demo", archive=tmp_path / "archive"
    )
    assert served.exit_code != 0 and "shared queue" in served.stderr


def test_workers_on_an_object_store_need_the_shared_ledger() -> None:
    config = Config(service=ServiceSettings(redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(ConfigError, match="WORKBOOKS_DATABASE_URL"):
        check_role("worker", config, "s3://bucket/archive")
    check_role("worker", config, "/srv/archive")  # one machine's folder: its own ledger file
    check_role("all", Config(), "s3://bucket/archive")  # one process: nothing to share


def test_intake_queues_on_redis_and_a_worker_runs_it_once(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    archive = tmp_path / "archive"
    config = service_config(archive, redis_url=redis_url)
    intake = Service(config=config, archive_dir=archive, source="demo", role="intake", workers=4)
    assert intake.workers == 0  # intake runs nothing, whatever --workers says
    with ServiceThread(intake) as running:
        assert requests.get(f"{running.url}/healthz", timeout=10).json()["workers"] == 0
        assert running.post(delivery(alert())).status_code == 202
        assert running.post(delivery(alert())).status_code == 202  # a duplicate: deduplicated
    assert intake.archive.runs() == []  # nothing ran in the intake

    worker = Service(
        config=config,
        archive_dir=archive,
        source="(each run's own)",
        role="worker",
        workers=1,
        worker_name="worker-7",
    )
    worker.start()
    try:
        runs = wait_for(lambda: worker.archive.runs(), 120, "the worker's run")
    finally:
        worker.stop()
    assert len(runs) == 1
    assert runs[0].worker == "worker-7" and runs[0].host
    assert runs[0].source == "demo"  # the source the alert was accepted with
