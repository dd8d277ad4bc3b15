"""The archive on object storage: a real S3-compatible server (moto) on loopback, two hosts'
caches, commit markers, notes, resolutions, prune, the pages, and no credential anywhere."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from s3server import ACCESS_KEY, SECRET_KEY, S3Server, s3_server
from test_archive import START, commit, record
from test_web import serving
from workbooks.archive import staging
from workbooks.archive.store import Archive
from workbooks.core.config import load_config
from workbooks.core.errors import ArchiveError, ConfigError
from workbooks.core.findings import Finding
from workbooks.service.app import Service


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "wb-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    s3.make_bucket(name)
    for key, value in s3.env(name).items():
        monkeypatch.setenv(key, value)
    return name


def host(bucket: str, cache: Path) -> Archive:
    """The archive as one host sees it: the bucket, through its own cache folder."""
    archive = Archive(f"s3://{bucket}/archive", storage=_storage(cache))
    assert archive.mirror is not None
    archive.mirror.refresh_seconds = 0.0  # tests look at once, not 2 s later
    return archive


def _storage(cache: Path):  # type: ignore[no-untyped-def]
    from workbooks.core.config import ArchiveStorage

    return ArchiveStorage(cache=str(cache))


def keys(archive: Archive) -> list[str]:
    assert archive.objects is not None
    base = archive.objects.base
    return sorted(key[len(base) + 1 :] for key in archive.objects.fs.find(base))


def test_a_run_is_uploaded_marker_last_and_another_host_reads_it(
    bucket: str, tmp_path: Path
) -> None:
    writer = host(bucket, tmp_path / "a")
    finding = Finding(severity="warning", title="retries up on checkout")
    run = commit(writer, [finding])
    relative = f"{run.incident_id}/{run.run_id}"
    assert {
        f"{relative}/run.json",
        f"{relative}/findings.json",
        f"{relative}/workbook.ipynb",
    } <= set(keys(writer))
    assert run.host and run.worker  # who ran it, in run.json
    assert json.loads((run.path / "run.json").read_text())["host"] == run.host

    reader = host(bucket, tmp_path / "b")  # another host: an empty cache, no shared folder
    assert [each.run_id for each in reader.runs()] == [run.run_id]
    assert reader.findings(reader.get(run.run_id))[0].title == "retries up on checkout"
    assert (reader.get(run.run_id).path / "workbook.ipynb").read_text() == "{}"
    found = reader.incidents(search="checkout")
    assert [each.incident_id for each in found] == [run.incident_id]
    assert reader.root != writer.root and not (tmp_path / "b" / "archive").exists()


def test_a_run_without_its_marker_is_invisible_and_pruned_once_old(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = host(bucket, tmp_path / "a")
    done = commit(writer)
    assert writer.objects is not None
    # A worker killed while uploading: every file but run.json.
    half = f"{done.incident_id}/20261128T140600Z-high-latency"
    writer.objects.put_text(f"{half}/findings.json", '{"findings": []}')
    writer.objects.put_text(f"{half}/workbook.ipynb", "{}")

    reader = host(bucket, tmp_path / "b")
    assert [run.run_id for run in reader.runs()] == [done.run_id]
    assert reader.incident(done.incident_id).run_count == 1
    assert not (tmp_path / "b" / half).exists()

    monkeypatch.setattr(staging, "STALE_AFTER", timedelta(0))
    reader.prune(older_than=timedelta(days=3650), dry_run=False)
    assert not [key for key in keys(reader) if key.startswith(half)]
    assert f"{done.incident_id}/{done.run_id}/run.json" in keys(reader)


def test_notes_and_resolutions_reach_every_host(bucket: str, tmp_path: Path) -> None:
    first = host(bucket, tmp_path / "a")
    run = commit(first)
    second = host(bucket, tmp_path / "b")
    second.add_note(run.incident_id, "rolled back checkout v42", author="ana")
    first.add_note(run.incident_id, "error rate back to normal", author="bo")
    assert second.mark_resolved(run.incident_id, START + timedelta(minutes=30))

    for archive in (first, second, host(bucket, tmp_path / "c")):
        assert [note.text for note in archive.notes(run.incident_id)] == [
            "rolled back checkout v42",
            "error rate back to normal",
        ]
        incident = archive.incident(run.incident_id)
        assert incident.status == "resolved" and incident.note_count == 2
        assert [each.incident_id for each in archive.incidents(search="rolled")] == [
            run.incident_id
        ]


def test_prune_deletes_from_the_bucket_and_other_hosts_forget_the_run(
    bucket: str, tmp_path: Path
) -> None:
    first = host(bucket, tmp_path / "a")
    old = commit(first)
    new = commit(
        first,
        started_at=START + timedelta(days=30),
        finished_at=START + timedelta(days=30, seconds=3),
    )
    second = host(bucket, tmp_path / "b")
    assert len(second.runs()) == 2
    plan = first.prune(older_than=timedelta(days=10), now=START + timedelta(days=31), dry_run=False)
    assert [run.run_id for run in plan.runs] == [old.run_id]
    assert not [key for key in keys(first) if key.startswith(f"{old.incident_id}/{old.run_id}/")]
    assert [run.run_id for run in second.runs()] == [new.run_id]
    assert not (tmp_path / "b" / old.incident_id / old.run_id).exists()


def test_reindex_rebuilds_a_lost_cache_from_the_bucket(bucket: str, tmp_path: Path) -> None:
    archive = host(bucket, tmp_path / "a")
    run = commit(archive)
    import shutil

    shutil.rmtree(tmp_path / "a")
    again = host(bucket, tmp_path / "a")
    assert again.reindex() == 1
    assert again.get(run.run_id).run_id == run.run_id
    assert again.stats().runs == 1 and again.stats().bytes > 0


def test_the_archive_pages_list_and_link_runs_from_the_bucket(bucket: str, tmp_path: Path) -> None:
    import nbformat

    from workbooks.archive.web import create_app
    from workbooks.core.findings import ranked

    writer = host(bucket, tmp_path / "a")
    folder = writer.stage()
    nbformat.write(nbformat.v4.new_notebook(), str(folder / "workbook.ipynb"))
    (folder / "evidence").mkdir()
    (folder / "evidence" / "latency.csv").write_text("t,p99\n0,1.5\n")
    findings = ranked([Finding(severity="critical", title="p99 up")])
    base = record()
    run = writer.commit(folder, base.with_findings(findings), findings)
    reader = host(bucket, tmp_path / "b")
    with serving(create_app(reader)) as url:
        listing = requests.get(f"{url}/", timeout=10)
        assert listing.status_code == 200 and run.incident_id in listing.text
        notebook = requests.get(f"{url}/runs/{run.run_id}/workbook.ipynb", timeout=10)
        assert notebook.status_code == 200 and json.loads(notebook.text)["nbformat"] == 4
        report = requests.get(f"{url}/runs/{run.run_id}/report", timeout=30)
        assert report.status_code == 200 and "p99 up" in report.text
        evidence = requests.get(f"{url}/runs/{run.run_id}/evidence/latency.csv", timeout=10)
        assert evidence.status_code == 200 and "1.5" in evidence.text


def test_no_credential_reaches_the_bucket_the_cache_or_an_error(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = host(bucket, tmp_path / "a")
    run = commit(archive)
    archive.add_note(run.incident_id, "checked", author="ana")
    assert archive.objects is not None
    for key in archive.objects.fs.find(archive.objects.base):
        text = archive.objects.fs.cat_file(key).decode("utf-8", "replace")
        assert SECRET_KEY not in text and ACCESS_KEY not in text, key
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data and ACCESS_KEY.encode() not in data, path

    # A wrong secret: the store refuses, and the message names the bucket, never the keys.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY + "-wrong")
    missing = host("wb-no-such-bucket", tmp_path / "c")
    with pytest.raises(ArchiveError) as refused:
        commit(missing)
    message = str(refused.value)
    assert "wb-no-such-bucket" in message and "credentials" in message
    assert SECRET_KEY not in message and ACCESS_KEY not in message
    assert message.startswith("nothing was archived") and not missing.runs()


def test_config_names_the_store_but_never_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WORKBOOKS_ARCHIVE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "workbooks.yaml"
    path.write_text(
        "archive: {url: s3://team-bucket/incidents, endpoint_url: http://127.0.0.1:9000, "
        "region: eu-west-1, cache: " + str(tmp_path / "cache") + "}\n"
    )
    config = load_config(path)
    assert config.archive_url == "s3://team-bucket/incidents"
    archive = Archive.from_config(config)
    assert archive.location == "s3://team-bucket/incidents"
    assert archive.root == tmp_path / "cache"
    path.write_text("archive: {url: s3://b/p, aws_secret_access_key: x}\n")
    with pytest.raises(ConfigError):
        load_config(path)
    with pytest.raises(ConfigError, match="must not carry credentials"):
        Archive("s3://AKIA:secret@bucket/prefix")
    assert os.environ.get("WORKBOOKS_ARCHIVE") is None


def test_serve_archives_its_runs_into_the_bucket(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_service import RUNBOOKS, ServiceThread, alert, delivery, wait_for
    from workbooks.core.config import Config, ServiceSettings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "service-cache"))
    url = f"s3://{bucket}/archive"
    config = Config(notebooks=str(RUNBOOKS), archive=url, service=ServiceSettings(workers=1))
    service = Service(config=config, archive_dir=url, source="demo", worker_name="one")
    with ServiceThread(service) as running:
        assert running.post(delivery(alert())).status_code == 202
        reader = host(bucket, tmp_path / "reader")
        runs = wait_for(reader.runs, 120, "the run in the bucket")
        listing = requests.get(f"{running.url}/", timeout=10).text
    assert runs[0].worker == "one" and runs[0].incident_id in listing
    assert f"{runs[0].incident_id}/{runs[0].run_id}/run.json" in keys(reader)
    # The ledger and queue of a one-host service live in its cache, never in the bucket.
    assert not [key for key in keys(reader) if key.endswith(".sqlite")]
