"""The archive in a browser: incidents, their timelines, reports, notebooks and evidence.

:func:`create_app` returns a read-only Starlette app over an :class:`Archive`; it can be served
alone (:func:`serve_archive`, ``workbook archive serve``) or mounted inside another app (links
are built from the mount point). Pages:

=====================================  =========================================================
``/``                                  incidents newest first; filters and free-text search
``/incidents/{incident}``              the timeline: fired, each run, notes, resolved
``/runs/{run}/report``                 the report page, rendered once per run, kept in memory
``/runs/{run}/workbook.ipynb``         the executed notebook, as a download
``/runs/{run}/evidence/``              the evidence files, and each file below it
=====================================  =========================================================

Templates autoescape, so label values and finding text show as text whatever they hold, and
every page is sent with a Content-Security-Policy that allows no script at all
(:mod:`workbooks.archive.access`, which also checks the reader). Ids and file names from URLs are
checked against the archive before any file is opened, and no route follows a symbolic link.
Reading a page never writes into the archive.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from workbooks.archive.access import MAX_REQUEST_HEAD_BYTES, Guard, ReaderAccess, check_exposure
from workbooks.archive.report import CONTENT_SECURITY_POLICY, ReportCache
from workbooks.archive.store import EVIDENCE_DIR, NOTEBOOK_FILE, Archive, IncidentSummary, RunRecord
from workbooks.core.config import load_config
from workbooks.core.durations import parse_duration
from workbooks.core.errors import ConfigError, RunNotFoundError, WorkbooksError
from workbooks.core.findings import SEVERITIES
from workbooks.core.paths import PROJECT_ROOT

WEB_TEMPLATES = PROJECT_ROOT / "templates" / "web"
STATUSES = ("firing", "resolved", "succeeded", "failed")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # bounded: no ENAMETOOLONG
_DEFAULT_LIMIT = 200
OPEN = ReaderAccess()  # no reader check: for loopback and tests


def create_app(archive: Archive, *, access: ReaderAccess | None = OPEN) -> Starlette:
    """The archive's pages, read-only; mountable under any path.

    ``access`` says who may read (open by default: for loopback); None leaves the reader check
    and the security headers to whoever mounts the app (``workbook serve`` guards its own).
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(WEB_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["when"] = _when
    templates = Jinja2Templates(env=environment)
    pages = _Pages(archive, templates)
    app = Starlette(
        routes=[
            Route("/", pages.incidents, name="incidents"),
            Route("/incidents/{incident_id}", pages.incident, name="incident"),
            Route("/runs/{run_id}/report", pages.report, name="report"),
            Route("/runs/{run_id}/workbook.ipynb", pages.notebook, name="notebook"),
            Route("/runs/{run_id}/evidence/", pages.evidence, name="evidence"),
            Route("/runs/{run_id}/evidence/{name:path}", pages.evidence_file, name="evidence_file"),
        ],
        exception_handlers={HTTPException: pages.error, WorkbooksError: pages.error},
    )
    if access is not None:
        app.add_middleware(Guard, access=access)
    return app


def serve_archive(
    archive: str | Path | Archive,
    host: str = "127.0.0.1",
    port: int = 9096,
    *,
    access: ReaderAccess | None = None,
) -> None:
    """Serve the archive's pages with uvicorn until interrupted.

    ``access`` defaults to the configured reader token and trusted header; off loopback one of
    them is required (:class:`ConfigError` otherwise).
    """
    import uvicorn

    access = access if access is not None else ReaderAccess.from_config(load_config())
    check_exposure(host, access)
    uvicorn.run(
        create_app(archive if isinstance(archive, Archive) else Archive(archive), access=access),
        host=host,
        port=port,
        log_level="info",
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
    )


def href(request: Request, path: str) -> str:
    """``path`` under wherever this app is mounted."""
    return request.scope.get("root_path", "").rstrip("/") + path


class _Pages:
    """The handlers: plain functions, so Starlette runs them (SQLite, files) in its threadpool."""

    def __init__(self, archive: Archive, templates: Jinja2Templates) -> None:
        self.archive = archive
        self.templates = templates
        self.reports = ReportCache()

    def _page(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        context = {
            "home": href(request, "/"),
            "href": lambda path: href(request, path),
            "quote": quote,
            "archive_root": str(self.archive.root),
            **context,
        }
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def incidents(self, request: Request) -> Response:
        params = request.query_params
        chosen = {key: params.get(key, "").strip() for key in _FILTERS}
        problem, status_code = None, 200
        try:
            found = self.archive.incidents(
                runbook=chosen["runbook"] or None,
                service=chosen["service"] or None,
                severity=chosen["severity"] or None,
                status=chosen["status"] or None,
                since=_since(chosen["since"]),
                until=_until(chosen["until"]),
                search=chosen["q"] or None,
                limit=_DEFAULT_LIMIT,
            )
        except ConfigError as exc:
            found, problem, status_code = [], str(exc), 400
        except OverflowError:  # since=999999999999d, until=9999-12-31: beyond any date
            found, status_code = [], 400
            problem = "since and until must be dates between the years 1 and 9999"
        values = self.archive.filter_values()
        values["severity"] = sorted(set(values["severity"]) | set(SEVERITIES), key=_rank)
        values["status"] = list(STATUSES)
        return self._page(
            request,
            "incidents.html",
            {
                "incidents": found,
                "chosen": chosen,
                "values": values,
                "problem": problem,
                "limit": _DEFAULT_LIMIT,
                "filtered": any(chosen.values()),
            },
            status_code,
        )

    def incident(self, request: Request) -> Response:
        incident_id = _safe(request.path_params["incident_id"], "incident")
        try:
            found = self.archive.incident(incident_id)
        except RunNotFoundError:
            raise HTTPException(404, f"no incident {incident_id} in this archive") from None
        if found.incident_id != incident_id:  # a run id: the incident page is its incident's
            raise HTTPException(404, f"no incident {incident_id} in this archive")
        return self._page(
            request, "incident.html", {"incident": found, "timeline": timeline(found)}
        )

    def _run(self, request: Request) -> RunRecord:
        run_id = _safe(request.path_params["run_id"], "run")
        try:
            run = self.archive.get(run_id)
        except RunNotFoundError:
            run = None
        if run is None or run.run_id != run_id:
            raise HTTPException(404, f"no run {run_id} in this archive")
        return run

    def report(self, request: Request) -> Response:
        run = self._run(request)
        # frame-ancestors only works as a header (the page's own meta policy cannot carry it).
        headers = {"Content-Security-Policy": f"{CONTENT_SECURITY_POLICY}; frame-ancestors 'none'"}
        # Never written from here: a page view must not change the archive (or fail on a
        # read-only one). A fresh report.html from `workbook report` is sent as it is.
        page = self.reports.page(self.archive, run)
        if isinstance(page, Path):
            return FileResponse(page, media_type="text/html; charset=utf-8", headers=headers)
        return HTMLResponse(page, headers=headers)

    def notebook(self, request: Request) -> Response:
        run = self._run(request)
        path = run.path / NOTEBOOK_FILE
        if path.is_symlink() or not path.is_file():  # a link could point anywhere
            raise HTTPException(404, f"the notebook of run {run.run_id} was pruned or is missing")
        return FileResponse(
            path,
            media_type="application/x-ipynb+json",
            filename=f"{run.run_id}.ipynb",
            content_disposition_type="attachment",
        )

    def evidence(self, request: Request) -> Response:
        run = self._run(request)
        folder = run.path / EVIDENCE_DIR
        files = []
        if folder.is_dir() and not folder.is_symlink():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    relative = path.relative_to(folder).as_posix()
                    files.append({"name": relative, "bytes": path.stat().st_size})
        return self._page(request, "evidence.html", {"run": run, "files": files})

    def evidence_file(self, request: Request) -> Response:
        run = self._run(request)
        name = request.path_params["name"]
        folder = (run.path / EVIDENCE_DIR).resolve()
        parts = name.split("/")
        if (run.path / EVIDENCE_DIR).is_symlink() or not all(_SAFE_NAME.match(p) for p in parts):
            raise HTTPException(404, "no such evidence file")
        path = folder.joinpath(*parts)
        if path.is_symlink() or not path.resolve().is_relative_to(folder) or not path.is_file():
            raise HTTPException(404, "no such evidence file")
        if path.suffix == ".json":
            return FileResponse(path, media_type="application/json")
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=path.name,
            content_disposition_type="attachment",
        )

    def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status_code, message = exc.status_code, str(exc.detail)
        else:
            status_code, message = 500, str(exc)
        return self._page(
            request, "error.html", {"status_code": status_code, "message": message}, status_code
        )


_FILTERS = ("q", "runbook", "service", "severity", "status", "since", "until")


def timeline(incident: IncidentSummary) -> list[dict[str, Any]]:
    """What happened to an incident, in time order: fired, runs, notes, resolved."""
    events: list[dict[str, Any]] = [
        {"when": incident.starts_at, "kind": "fired", "run": None, "note": None}
    ]
    events += [
        {"when": run.started_at, "kind": "run", "run": run, "note": None} for run in incident.runs
    ]
    events += [
        {"when": note.created_at, "kind": "note", "run": None, "note": note}
        for note in incident.notes
    ]
    if incident.status == "resolved":
        last = max(event["when"] for event in events)
        events.append(
            {"when": incident.ended_at or last, "kind": "resolved", "run": None, "note": None}
        )
    order = {"fired": 0, "run": 1, "note": 2, "resolved": 3}
    return sorted(events, key=lambda event: (event["when"], order[event["kind"]]))


def _safe(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value):
        raise HTTPException(404, f"no {what} {value} in this archive")
    return value


def _since(text: str) -> datetime | timedelta | None:
    if not text:
        return None
    if re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", text):
        return parse_duration(text)
    return _moment(text, "since")


def _until(text: str) -> datetime | None:
    if not text:
        return None
    moment = _moment(text, "until")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        moment += timedelta(days=1)  # a date means up to its end
    return moment


def _moment(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{what}={text!r} is neither a duration (7d, 12h) nor a date or time "
            "(2026-11-20, 2026-11-20T14:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if moment else ""
