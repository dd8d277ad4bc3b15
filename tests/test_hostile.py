"""Issue 8: the archive and the service tried as a hostile user would, one test per finding.

Each test reproduces what broke (it failed before the fix): far-off alert times, credentials in
the Prometheus URL, open archive pages, a full disk, a read-only archive, 500s for bad input, a
notebook route that followed links, staging leftovers, missing headers. Then property-based
tests (hypothesis) throw generated hostile payloads and page parameters at the real service and
assert the contract: 202, 400, 401, 413, 414 or 422, never a 500, never a lost accepted alert.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_service import (
    TOKEN,
    ServiceThread,
    alert,
    delivery,
    service_config,
    wait_for,
)
from workbooks.archive.access import ReaderAccess, credentials
from workbooks.archive.store import Archive, RunRecord
from workbooks.archive.web import create_app, serve_archive
from workbooks.cli import main
from workbooks.core.alert import parse_alert_group
from workbooks.core.errors import BadAlertError, ConfigError
from workbooks.core.redact import credentials_in_url, redact_url
from workbooks.service.app import Service
from workbooks.service.server import serve

RUNBOOKS = Path(__file__).parent / "notebooks" / "runbooks"
READER = "reader-s3cret"
SECRET = "PLANTEDsecret42"


def latency_alert(starts: str = "2026-11-28T14:05:00Z") -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "workbooks",
        "groupKey": '{}:{alertname="HighLatency"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighLatency", "service": "api", "severity": "critical"},
                "annotations": {"summary": "p99 latency is high"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": "f1",
            }
        ],
    }


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    environment = {"WORKBOOKS_NOTEBOOKS": str(RUNBOOKS), **(env or {})}
    return CliRunner().invoke(main, list(args), env=environment)


def files_holding(root: Path, secret: str) -> list[Path]:
    return [
        path for path in root.rglob("*") if path.is_file() and secret.encode() in path.read_bytes()
    ]


@pytest.fixture
def accepting(tmp_path: Path) -> Iterator[ServiceThread]:
    """The service with no workers and a reader token: what it accepts stays queued."""
    config = service_config(tmp_path / "archive", max_body_bytes=4096, reader_token=READER)
    service = Service(config=config, archive_dir=tmp_path / "archive", source="demo", workers=0)
    with ServiceThread(service) as running:
        yield running


def commit_run(archive: Archive, staging: Path, **changes: Any) -> RunRecord:
    """A succeeded run of tiny-latency, committed from ``staging`` as planted by a test."""
    moment = datetime(2026, 11, 28, 14, tzinfo=UTC)
    fields: dict[str, Any] = {
        "incident_id": "20261128T1400Z-x-00000000",
        "runbook": "tiny-latency",
        "runbook_hash": "h",
        "status": "succeeded",
        "started_at": moment,
        "finished_at": moment,
        "duration_seconds": 1.0,
        "source": "demo",
        "alert_name": "HighLatency",
        "severity": "warning",
        "alert_status": "firing",
    }
    return archive.commit(staging, RunRecord(**{**fields, **changes}), [])


def read(running: ServiceThread, path: str, **params: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {READER}"}
    return requests.get(f"{running.url}{path}", params=params, headers=headers, timeout=30)


# -- 1. one alert took the archive's main page down -----------------------------------------------


@pytest.mark.parametrize("starts", ["0002-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_a_far_off_start_time_is_refused_naming_the_field(
    accepting: ServiceThread, starts: str
) -> None:
    response = accepting.post(delivery(alert(starts=starts)))
    assert response.status_code == 400
    assert "alerts[0].startsAt" in response.json()["error"]
    assert accepting.metric("workbooks_deliveries_rejected_total") == 1
    assert accepting.service.intake.runs() == []
    with pytest.raises(BadAlertError, match=r"alerts\[0\]\.startsAt"):
        parse_alert_group(latency_alert(starts))


def test_a_record_the_pages_cannot_show_is_left_out_not_a_500(
    accepting: ServiceThread, tmp_path: Path
) -> None:
    archive = accepting.service.archive
    for name, starts in (("good", datetime(2026, 11, 28, tzinfo=UTC)), ("old", None)):
        commit_run(
            archive,
            archive.stage(),
            incident_id=f"20261128T1400Z-{name}-00000000",
            alert_name=name,
            alert_starts_at=starts or datetime(2, 1, 1, tzinfo=UTC),
        )
    # What the index held before the fix: a start time that is no fixed-width time at all.
    with sqlite3.connect(archive.index_path) as connection:
        connection.execute(
            "UPDATE incidents SET starts_at = '2-01-01T00:00:00.000000Z' "
            "WHERE incident_id LIKE '%-old-%'"
        )
    connection.close()
    page = read(accepting, "/")
    assert page.status_code == 200
    assert "good" in page.text
    assert archive.reindex() == 2  # and a rebuilt index, with year 2 written fixed-width, shows
    assert read(accepting, "/").status_code == 200
    assert {each.alert_name for each in archive.incidents()} == {"good", "old"}


# -- 2. credentials reached the archive -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown", "problem"),
    [
        ("http://prom:9090/", "http://prom:9090/", None),
        ("http://u:pw@prom:9090/?token=abc", "http://prom:9090/", "user name"),
        ("https://prom/api?access_token=a&step=30", "https://prom/api?step=30", "access_token"),
        ("https://prom/?X-Amz-Signature=s&X-Amz-Date=d&q=1", "https://prom/?q=1", "X-Amz-Date"),
        ("http://prom/?api_key=1&Password=2&sig=3&auth=4", "http://prom/", "Password"),
        ("http://prom/x?session_id=1#frag", "http://prom/x", "session_id"),
        ("demo", "demo", None),
        ("/archive/inc/run/evidence", "/archive/inc/run/evidence", None),
    ],
)
def test_one_redaction_rule(url: str, shown: str, problem: str | None) -> None:
    assert redact_url(url) == shown
    found = credentials_in_url(url)
    assert (found is None) if problem is None else (problem in found)


def test_no_planted_secret_reaches_any_file_of_the_archive_or_its_reports(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    (tmp_path / "alert.json").write_text(json.dumps(latency_alert()))
    url = f"http://reader:{SECRET}pw@127.0.0.1:9/?token={SECRET}&step=30"
    result = cli(
        "--archive", str(archive), "run", "--alert", str(tmp_path / "alert.json"),
        env={"WORKBOOKS_PROMETHEUS_URL": url},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [run] = Archive(archive).runs()
    assert run.source == "http://127.0.0.1:9/?step=30"
    for format in ("html", "md"):
        assert (
            cli("--archive", str(archive), "report", run.run_id, "--format", format).exit_code == 0
        )
    assert (run.path / "report.html").is_file() and (run.path / "report.md").is_file()
    assert files_holding(archive, SECRET) == []
    assert SECRET not in result.output


def test_run_and_serve_refuse_a_url_with_credentials_with_the_same_message(tmp_path: Path) -> None:
    (tmp_path / "alert.json").write_text(json.dumps(latency_alert()))
    archive = tmp_path / "archive"
    url = f"http://user:{SECRET}@127.0.0.1:9/?token={SECRET}"
    ran = cli("--archive", str(archive), "run", "--alert", str(tmp_path / "alert.json"),
              "--prometheus", f"http://127.0.0.1:9/?token={SECRET}")  # fmt: skip
    assert ran.exit_code == 2 and "carries credentials" in ran.output
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbooks",
            "--archive",
            str(archive),
            "serve",
            "--prometheus",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WORKBOOKS_NOTEBOOKS": str(RUNBOOKS)},
    )
    assert served.returncode == 2, served.stderr
    first_line = served.stderr.strip().splitlines()[-1]
    assert first_line.startswith("error: the Prometheus URL carries credentials")
    assert SECRET not in served.stderr and SECRET not in ran.output
    assert not archive.exists() or files_holding(archive, SECRET) == []


# -- 3. the archive pages were open ---------------------------------------------------------------


def test_off_loopback_serve_needs_a_reader(tmp_path: Path) -> None:
    config = service_config(tmp_path / "archive")  # a webhook token, but no reader
    with pytest.raises(ConfigError, match="WORKBOOKS_READER_TOKEN"):
        serve(host="0.0.0.0", config=config, archive_dir=tmp_path, prometheus="demo", workers=0)


def test_archive_serve_off_loopback_needs_a_reader_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WORKBOOKS_TRUSTED_USER_HEADER"):
        serve_archive(tmp_path, host="0.0.0.0", access=ReaderAccess())
    result = cli("--archive", str(tmp_path), "archive", "serve", "--host", "0.0.0.0")
    assert result.exit_code == 2 and "refusing to serve the archive's pages" in result.output


def test_the_pages_need_a_reader_and_reading_writes_nothing(accepting: ServiceThread) -> None:
    archive = accepting.service.archive
    staging = archive.stage()
    (staging / "workbook.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    run = commit_run(archive, staging)
    pages = ["/", f"/incidents/{run.incident_id}", f"/runs/{run.run_id}/report"]
    pages += [f"/runs/{run.run_id}/workbook.ipynb", f"/runs/{run.run_id}/evidence/"]
    for path in pages:
        refused = requests.get(f"{accepting.url}{path}", timeout=30)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert read(accepting, path).status_code == 200, path
    basic = base64.b64encode(f"anyone:{READER}".encode()).decode()
    assert (
        requests.get(
            f"{accepting.url}/", headers={"Authorization": f"Basic {basic}"}, timeout=30
        ).status_code
        == 200
    )
    assert not (run.path / "report.html").exists()  # the report page wrote nothing
    assert requests.get(f"{accepting.url}/healthz", timeout=30).status_code == 200


def test_a_trusted_proxy_header_admits_its_users(tmp_path: Path) -> None:
    config = service_config(tmp_path / "archive", trusted_user_header="X-Forwarded-Email")
    service = Service(config=config, archive_dir=tmp_path / "archive", source="demo", workers=0)
    with ServiceThread(service) as running:
        assert requests.get(f"{running.url}/", timeout=30).status_code == 401
        header = {"X-Forwarded-Email": "ana@example.com"}
        assert requests.get(f"{running.url}/", headers=header, timeout=30).status_code == 200
        empty = {"X-Forwarded-Email": ""}
        assert requests.get(f"{running.url}/", headers=empty, timeout=30).status_code == 401


# -- 4. a full disk gave a traceback --------------------------------------------------------------


@contextmanager
def small_tmpfs(folder: Path, size: str = "3m") -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def filling_runbook(folder: Path) -> Path:
    """tiny-latency, whose notebook fills the disk it runs on before its findings are saved."""
    notebook = nbformat.read(RUNBOOKS / "tiny-latency.ipynb", as_version=4)
    notebook.cells[3].source = (
        "from pathlib import Path\n"
        "with Path('filler.bin').open('wb') as out:\n"
        "    try:\n"
        "        while True:\n"
        "            out.write(b'x' * 65536)\n"
        "            out.flush()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / "tiny-latency.ipynb")
    return folder


def test_a_disk_that_fills_during_a_run_gives_one_line_and_keeps_the_alert(
    tmp_path: Path,
) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        archive = disk / "archive"
        Archive(archive).reindex()  # an index that must stay untouched
        before = (archive / "index.sqlite").read_bytes()
        (tmp_path / "alert.json").write_text(json.dumps(latency_alert()))
        result = CliRunner().invoke(
            main,
            [
                *("--archive", str(archive), "run", "--alert", str(tmp_path / "alert.json")),
                *("--prometheus", "http://127.0.0.1:9"),
            ],
            env={"WORKBOOKS_NOTEBOOKS": str(filling_runbook(tmp_path / "runbooks"))},
        )
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: nothing was archived")
        assert "No space left on device" in lines[0]
        assert list((archive / ".staging").iterdir()) == []
        [kept] = (archive / ".unarchived").iterdir()
        assert parse_alert_group(kept.read_text()).alerts[0].name == "HighLatency"
        assert (archive / "index.sqlite").read_bytes() == before
        assert Archive(archive).runs() == []
        # Once there is room again, the kept alert runs like any other.
        again = cli(
            "--archive", str(archive), "run", "--alert", str(kept), "--prometheus", "http://h:9"
        )  # fmt: skip
        assert again.exit_code == 0, again.output


def test_a_full_disk_refuses_to_start_a_run_in_one_line(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        archive = disk / "archive"
        archive.mkdir()
        with (disk / "filler").open("wb") as filler, pytest.raises(OSError):
            while True:
                filler.write(b"x" * 65536)
                filler.flush()
        (tmp_path / "alert.json").write_text(json.dumps(latency_alert()))
        result = cli(
            "--archive", str(archive), "run", "--alert", str(tmp_path / "alert.json"),
            "--prometheus", "http://127.0.0.1:9",
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert result.output.strip().startswith("error: the disk holding the archive")
        assert len(result.output.strip().splitlines()) == 1
        staging = archive / ".staging"
        assert not staging.exists() or list(staging.iterdir()) == []
        assert not (archive / "index.sqlite").exists()


# -- 5. a read-only archive could not be read -----------------------------------------------------


def test_a_read_only_archive_lists_shows_searches_and_serves_its_pages(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", size="20m") as disk:
        archive = disk / "archive"
        (tmp_path / "alert.json").write_text(json.dumps(latency_alert()))
        ran = cli(
            "--archive", str(archive), "run", "--alert", str(tmp_path / "alert.json"),
            "--prometheus", "http://127.0.0.1:9",
        )  # fmt: skip
        assert ran.exit_code == 0, ran.output
        [run] = Archive(archive).runs()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        listed = cli("--archive", str(archive), "list")
        assert listed.exit_code == 0 and run.run_id in listed.output, listed.output
        shown = cli("--archive", str(archive), "show", run.run_id)
        assert shown.exit_code == 0 and "p99 latency above baseline" in shown.output
        assert [each.incident_id for each in Archive(archive).incidents(search="api")] == [
            run.incident_id
        ]
        with serving(create_app(Archive(archive))) as url:
            assert requests.get(f"{url}/?q=api", timeout=30).status_code == 200
            assert run.incident_id in requests.get(f"{url}/", timeout=30).text
            report = requests.get(f"{url}/runs/{run.run_id}/report", timeout=120)
            assert report.status_code == 200 and "p99 latency above baseline" in report.text
        assert not (run.path / "report.html").exists()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# -- 6. 500 instead of 400 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        '{"a":' * 60_000,
        json.dumps(delivery(alert())).replace("inference-api", "\\ud800"),
    ],
    ids=["nested-lists", "nested-objects", "lone-surrogate"],
)
def test_hostile_json_is_a_counted_400(body: str) -> None:
    with pytest.raises(BadAlertError):
        parse_alert_group(body)


def test_hostile_json_over_http_is_a_counted_400(tmp_path: Path) -> None:
    config = service_config(tmp_path / "archive")  # the default body limit: 1 MiB
    service = Service(config=config, archive_dir=tmp_path / "archive", source="demo", workers=0)
    bodies = ["[" * 100_000, '{"a":' * 60_000]
    bodies.append(json.dumps(delivery(alert())).replace("inference-api", "\\ud800"))
    with ServiceThread(service) as running:
        for body in bodies:
            assert running.post(body).status_code == 400, body[:20]
        assert running.metric("workbooks_deliveries_rejected_total") == 3
        assert running.service.intake.runs() == []


@pytest.mark.parametrize(
    "params",
    [
        {"since": "999999999999999999999d"},
        {"until": "9999-12-31"},
    ],
)
def test_page_filters_beyond_any_date_are_a_400(accepting: ServiceThread, params: dict) -> None:
    response = read(accepting, "/", **params)
    assert response.status_code == 400
    assert "since" in response.text or "until" in response.text


def test_an_over_long_query_string_is_a_414(accepting: ServiceThread) -> None:
    response = read(accepting, "/", q="a" * 70_000)
    assert response.status_code == 414
    assert response.headers["x-content-type-options"] == "nosniff"


# -- 7. the notebook route followed links ---------------------------------------------------------


def test_no_file_route_follows_a_link(accepting: ServiceThread) -> None:
    archive = accepting.service.archive
    staging = archive.stage()
    (staging / "workbook.ipynb").symlink_to("/etc/passwd")
    (staging / "report.html").symlink_to("/etc/passwd")
    (staging / "evidence").symlink_to("/etc")
    run = commit_run(archive, staging)
    notebook = read(accepting, f"/runs/{run.run_id}/workbook.ipynb")
    assert notebook.status_code == 404 and "root:" not in notebook.text
    report = read(accepting, f"/runs/{run.run_id}/report")
    assert "root:x:0:0" not in report.text
    assert read(accepting, f"/runs/{run.run_id}/evidence/passwd").status_code == 404
    assert "passwd" not in read(accepting, f"/runs/{run.run_id}/evidence/").text


# -- 8. staging leftovers -------------------------------------------------------------------------


def test_a_killed_run_leaves_a_leftover_that_stats_shows_and_prune_removes(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    code = (
        "import sys, time; from workbooks.archive.store import Archive; "
        "folder = Archive(sys.argv[1]).stage(); "
        "(folder / 'workbook.ipynb').write_text('x' * 5000); "
        "print(folder, flush=True); time.sleep(60)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(archive)], stdout=subprocess.PIPE, text=True
    )
    folder = Path(process.stdout.readline().strip())
    try:
        assert "0 staging folders" not in cli("--archive", str(archive), "archive", "stats").output
        assert Archive(archive).leftovers() == []  # a live run's folder is no leftover
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
    stats = cli("--archive", str(archive), "archive", "stats")
    assert "1 staging folders of runs that died" in stats.output, stats.output
    dry = cli("--archive", str(archive), "archive", "prune", "--older-than", "3650d")
    assert folder.name in dry.output and folder.is_dir()
    pruned = cli("--archive", str(archive), "archive", "prune", "--older-than", "3650d", "--yes")
    assert pruned.exit_code == 0, pruned.output
    assert not folder.exists()
    assert re.search(r"leftovers +none", cli("--archive", str(archive), "archive", "stats").output)


# -- 9. response headers and the authorization header ---------------------------------------------


def test_every_response_says_nosniff_and_refuses_frames(accepting: ServiceThread) -> None:
    responses = [
        requests.get(f"{accepting.url}/healthz", timeout=30),
        requests.get(f"{accepting.url}/metrics", timeout=30),
        accepting.post(delivery(alert())),
        accepting.post("not json"),
        read(accepting, "/"),
        read(accepting, "/incidents/nope"),
        requests.get(f"{accepting.url}/", timeout=30),  # 401
    ]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url
        assert response.headers["x-frame-options"] == "DENY", response.url
    assert "frame-ancestors 'none'" in read(accepting, "/").headers["content-security-policy"]


@pytest.mark.parametrize(
    "header",
    # (Trailing spaces never reach a server: HTTP strips them from header values.)
    [f"bearer   {TOKEN}  ", f"Bearer  {TOKEN}", f"Bearer\t{TOKEN}", TOKEN, f"Bearer {TOKEN} x"],
)
def test_odd_authorization_spacing_is_refused(accepting: ServiceThread, header: str) -> None:
    response = accepting.post(delivery(alert()), token=None, headers={"Authorization": header})
    assert response.status_code == 401
    assert credentials(header, "Bearer") is None


def test_the_scheme_is_case_insensitive_with_one_space(accepting: ServiceThread) -> None:
    response = accepting.post(
        delivery(alert()), token=None, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert response.status_code == 202


# -- the standing guard: generated hostile input --------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", "\u0000", "../../etc/passwd", "<script>", "'; DROP TABLE runs; --", "\ud800", "0" * 500]
)
_times = st.sampled_from(
    ["2026-11-28T14:05:00Z", "0001-01-01T00:00:00Z", "0002-01-01T00:00:00Z", "9999-12-31T23:59Z",
     "2026-13-45T99:99Z", "", "now", "1969-12-31T23:59:59Z", "2026-11-28T14:05:00+14:00"]
) | st.datetimes(timezones=st.just(UTC)).map(lambda moment: moment.isoformat())  # fmt: skip
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)


@st.composite
def hostile_deliveries(draw: st.DrawFn) -> Any:
    """A delivery that is nearly right: each field may be replaced by something hostile."""
    alert = {
        "status": draw(st.sampled_from(["firing", "resolved"]) | _text),
        "labels": draw(
            st.fixed_dictionaries(
                {"alertname": st.sampled_from(["EchoAlert", "OtherAlert", "Nope"]) | _text},
                optional={"service": _text, "severity": _text},
            )
            | _json
        ),
        "annotations": draw(st.dictionaries(_text, _text, max_size=2) | _json),
        "startsAt": draw(_times | _json),
        "endsAt": draw(_times | _json),
        "fingerprint": draw(_text),
    }
    payload = {
        "version": draw(st.just("4") | _json),
        "status": draw(st.sampled_from(["firing", "resolved"]) | _text),
        "groupKey": draw(_text),
        "alerts": draw(st.lists(st.just(alert), min_size=1, max_size=2) | _json),
        "truncatedAlerts": draw(st.integers() | _json),
    }
    for key in draw(st.lists(st.sampled_from(list(payload)), max_size=2, unique=True)):
        del payload[key]
    return draw(st.just(payload) | _json)


@settings(max_examples=400, deadline=None)
@given(hostile_deliveries())
def test_the_parser_answers_any_payload_with_a_group_or_a_bad_alert(payload: Any) -> None:
    try:
        group = parse_alert_group(json.dumps(payload) if payload is not None else "null")
    except BadAlertError:
        return
    # Whatever it accepted can be stored and named: no time beyond what the archive can hold.
    assert json.loads(group.model_dump_json())
    assert all(1970 <= each.starts_at.year < 2200 for each in group.alerts)


@pytest.fixture(scope="module")
def hostile_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    archive = tmp_path_factory.mktemp("hostile") / "archive"
    config = service_config(archive, max_body_bytes=8192, reader_token=READER)
    service = Service(config=config, archive_dir=archive, source="demo", workers=0)
    with ServiceThread(service) as running:
        yield running


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=hostile_deliveries(), token=st.sampled_from([TOKEN, None, "wrong"]))
def test_the_webhook_answers_hostile_deliveries_within_its_contract(
    hostile_target: ServiceThread, payload: Any, token: str | None
) -> None:
    body = json.dumps(payload)
    response = hostile_target.post(body, token=token)
    assert response.status_code in (202, 400, 401, 413, 422), (response.status_code, body[:300])
    if response.status_code == 202:
        ledger = {run.task_id for run in hostile_target.service.intake.runs()}
        queued = {each["task"] for each in response.json()["queued"]}
        assert queued <= ledger  # accepted means recorded: never lost


# A lone surrogate cannot be put in a URL at all (it is sent in the webhook's JSON instead).
_url_text = _text.filter(lambda text: "\ud800" not in text)
_values = _url_text | st.from_regex(r"\d{1,25}[smhdwy]", fullmatch=True) | _times
_params = st.dictionaries(
    st.sampled_from(["q", "runbook", "service", "severity", "status", "since", "until", "x"]),
    _values,
    max_size=4,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(
        ["/", "/incidents/{}", "/runs/{}/report", "/runs/{}/workbook.ipynb", "/runs/{}/evidence/",
         "/runs/{}/evidence/{}"]
    ),
    ids=st.lists(_url_text, min_size=2, max_size=2),
    params=_params,
)  # fmt: skip
def test_every_page_answers_hostile_parameters_without_a_500(
    hostile_target: ServiceThread, route: str, ids: list[str], params: dict[str, str]
) -> None:
    from urllib.parse import quote

    path = route.format(*(quote(each, safe="") for each in ids))
    headers = {"Authorization": f"Bearer {READER}"}
    response = requests.get(
        f"{hostile_target.url}{path}", params=params, headers=headers, timeout=30
    )
    assert response.status_code < 500, (path, params, response.status_code, response.text[:300])
