"""The archive in a browser: incidents, their timelines, reports, notebooks and evidence.

:func:`create_app` returns a read-only Starlette app over an :class:`Archive`; it can be served
alone (:func:`serve_archive`, ``workbook archive serve``) or mounted inside another app (links
are built from the mount point). Pages:

=====================================  =========================================================
``/``                                  incidents newest first; filters and free-text search
``/incidents/{incident}``              the timeline: fired, each run, notes, resolved
``/runs/{run}/report``                 the report page, rendered on demand, cached in the run
``/runs/{run}/workbook.ipynb``         the executed notebook, as a download
``/runs/{run}/evidence/``              the evidence files, and each file below it
=====================================  =========================================================

Templates autoescape, so label values and finding text show as text whatever they hold, and
every page is sent with a Content-Security-Policy that allows no script at all. Ids and file
names from URLs are checked against the archive before any file is opened.
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workbooks.archive.report import CONTENT_SECURITY_POLICY, cached_report, report_html
from workbooks.archive.store import EVIDENCE_DIR, NOTEBOOK_FILE, Archive, IncidentSummary, RunRecord
from workbooks.core.config import PROJECT_ROOT, parse_duration
from workbooks.core.errors import ArchiveError, ConfigError, RunNotFoundError, WorkbooksError
from workbooks.core.findings import SEVERITIES

WEB_TEMPLATES = PROJECT_ROOT / "templates" / "web"
STATUSES = ("firing", "resolved", "succeeded", "failed")
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DEFAULT_LIMIT = 200


class _SecurityHeaders:
    """Adds a script-free Content-Security-Policy and nosniff to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(archive: Archive) -> Starlette:
    """The archive's pages, read-only; mountable under any path."""
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
    app.add_middleware(_SecurityHeaders)
    return app


def serve_archive(archive_dir: str | Path, host: str = "127.0.0.1", port: int = 9096) -> None:
    """Serve the archive's pages with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(Archive(archive_dir)), host=host, port=port, log_level="info")


def href(request: Request, path: str) -> str:
    """``path`` under wherever this app is mounted."""
    return request.scope.get("root_path", "").rstrip("/") + path


class _Pages:
    """The handlers: plain functions, so Starlette runs them (SQLite, files) in its threadpool."""

    def __init__(self, archive: Archive, templates: Jinja2Templates) -> None:
        self.archive = archive
        self.templates = templates

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
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        try:
            path = cached_report(self.archive, run)
        except ArchiveError:  # a read-only archive: render it for this request only
            page = report_html(self.archive, run)
            return HTMLResponse(page, headers=headers)
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=headers)

    def notebook(self, request: Request) -> Response:
        run = self._run(request)
        path = run.path / NOTEBOOK_FILE
        if not path.is_file():
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
        if folder.is_dir():
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
        if not all(_SAFE_NAME.match(part) for part in parts):
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
