"""The incident report: one archived run as a page a reader understands without Python.

nbconvert renders the executed notebook through the template in ``templates/report/`` (it
extends JupyterLab's): first what the run found and how it ended, the alert's labels and timing,
where the data came from and when, and the actions taken; then each section of the workbook with
its charts and findings, the code folded away one click from sight. The HTML page is standalone
(images inlined, no script, no network: a Content-Security-Policy says so); the Markdown version
writes its charts as PNG files beside it, for pasting into a post-mortem document.

Everything that came from outside (labels, annotations, finding text, notes) is escaped by the
templates; the notebook's own outputs were escaped by the library when they were made.
"""

from __future__ import annotations

import html
import json
import shutil
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nbformat

from workbooks.archive.store import (
    ALERT_FILE,
    EVIDENCE_DIR,
    NOTEBOOK_FILE,
    NOTES_FILE,
    RESOLVED_FILE,
    RUN_FILE,
    Archive,
    RunRecord,
    package_version,
    write_atomically,
)
from workbooks.core.errors import ArchiveError, WorkbooksError
from workbooks.core.findings import format_value, ranked
from workbooks.core.paths import PROJECT_ROOT

TEMPLATES_DIR = PROJECT_ROOT / "templates"
TEMPLATE_NAME = "report"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_FILES = "report_files"
# The page needs no script and loads nothing: only inline styles and data: images.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
ReportFormat = Literal["html", "md"]


def render_report(archive: Archive, id: str, format: ReportFormat = "html") -> Path:
    """Write the report of a run (or of an incident's newest run) into its folder.

    ``html``: ``report.html``. ``md``: ``report.md`` with its charts in ``report_files/``.
    Returns the report's path.
    """
    run = archive.get(id)
    if format == "html":
        target = run.path / REPORT_HTML
        write_atomically(target, report_html(archive, run))
        return target
    if format == "md":
        text, files = report_markdown(archive, run)
        folder = run.path / REPORT_FILES
        try:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for name, data in files.items():
                (run.path / name).write_bytes(data)
        except OSError as exc:
            raise ArchiveError(f"cannot write the report's charts into {folder}: {exc}") from exc
        target = run.path / REPORT_MD
        write_atomically(target, text)
        return target
    raise ValueError(f"format must be 'html' or 'md', not {format!r}")


def report_sources(run: RunRecord) -> list[Path]:
    """What a run's report shows: when one of these changed, the report is stale."""
    return [
        run.path / NOTEBOOK_FILE,
        run.path / RUN_FILE,
        run.path.parent / NOTES_FILE,
        run.path.parent / RESOLVED_FILE,
        TEMPLATES_DIR / TEMPLATE_NAME / "index.html.j2",
    ]


class ReportCache:
    """Report pages for the web, rendered at most once per run and state, kept in memory.

    A fresh ``report.html`` (written by ``workbook report``) is served as it is; otherwise the
    page is rendered here, once however many requests ask at the same time, and nothing is
    written into the archive (which may be read-only). At most ``size`` pages are kept.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._pages: OrderedDict[tuple[str, float], str] = OrderedDict()
        self._lock = threading.Lock()
        self._rendering: dict[str, threading.Lock] = {}

    def page(self, archive: Archive, run: RunRecord) -> Path | str:
        stamp = max(
            (path.stat().st_mtime for path in report_sources(run) if path.exists()), default=0.0
        )
        written = run.path / REPORT_HTML
        if not written.is_symlink() and written.is_file() and written.stat().st_mtime >= stamp:
            return written
        key = (run.run_id, stamp)
        with self._lock:
            lock = self._rendering.setdefault(run.run_id, threading.Lock())
        with lock:  # one rendering per run at a time; the others wait for it and reuse it
            with self._lock:
                if key in self._pages:
                    self._pages.move_to_end(key)
                    return self._pages[key]
            page = report_html(archive, run)
            with self._lock:
                self._pages[key] = page
                while len(self._pages) > self.size:
                    self._pages.popitem(last=False)
                self._rendering.pop(run.run_id, None)
            return page


def report_html(archive: Archive, run: RunRecord) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_template_basedirs=[str(TEMPLATES_DIR)], template_name=TEMPLATE_NAME
    )
    exporter.register_filter("format_value", format_value)
    notebook = _notebook(run)
    context = report_context(archive, run, notebook)
    resources = {"workbooks": context, "metadata": {"name": context["page_title"]}}
    body, _ = _convert(exporter, notebook, resources, run)
    return body


def report_markdown(archive: Archive, run: RunRecord) -> tuple[str, dict[str, bytes]]:
    """The Markdown report and its charts: ``{"report_files/output_7_2.png": b"..."}``."""
    from nbconvert import MarkdownExporter

    exporter = MarkdownExporter(
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        template_name=TEMPLATE_NAME,
        template_file="index.md.j2",
        exclude_input=True,
    )
    exporter.register_filter("format_value", format_value)
    exporter.register_filter("md", markdown_text)
    notebook = _notebook(run)
    context = report_context(archive, run, notebook)
    resources = {
        "workbooks": context,
        "metadata": {"name": context["page_title"]},
        "unique_key": "report",
        "output_files_dir": REPORT_FILES,
    }
    body, produced = _convert(exporter, notebook, resources, run)
    return body, dict(produced.get("outputs", {}))


def _convert(
    exporter: Any, notebook: nbformat.NotebookNode, resources: dict[str, Any], run: RunRecord
) -> tuple[str, dict[str, Any]]:
    try:
        return exporter.from_notebook_node(notebook, resources=resources)
    except Exception as exc:  # nbconvert and Jinja raise many kinds; each is one message here
        raise WorkbooksError(
            f"cannot render the report of run {run.run_id}: {type(exc).__name__}: {exc}; check "
            f"the templates in {TEMPLATES_DIR / TEMPLATE_NAME}, or open the notebook itself: "
            f"{run.path / NOTEBOOK_FILE}"
        ) from exc


def markdown_text(value: Any) -> str:
    """Text from outside, safe inside Markdown and its tables: no HTML, no markup, one line."""
    text = html.escape(str(value), quote=False).replace("\r", " ").replace("\n", " ")
    for character in "\\`*_[]|#":
        text = text.replace(character, "\\" + character)
    return text


def _notebook(run: RunRecord) -> nbformat.NotebookNode:
    path = run.path / NOTEBOOK_FILE
    try:
        if path.is_symlink():  # could point anywhere: read no file the archive did not write
            raise FileNotFoundError(path)
        return nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        why = (
            f"pruned on {_when(run.pruned_at)}" if run.pruned_at else "missing from the run folder"
        )
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [
            nbformat.v4.new_markdown_cell(
                f"*The executed notebook of this run was {why}: the findings above are what "
                "remains of it.*"
            )
        ]
        return notebook
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read the notebook {path}: {exc}") from exc


# -- what the page says about the run --------------------------------------------------------------


def report_context(
    archive: Archive, run: RunRecord, notebook: nbformat.NotebookNode
) -> dict[str, Any]:
    """What the templates show beside the notebook: plain strings and dicts, escaped there."""
    incident = archive.incident(run.incident_id)
    try:
        findings = [finding.to_dict() for finding in ranked(archive.findings(run))]
    except ArchiveError:
        findings = []
    alert = _alert(run)
    title = str(notebook.metadata.get("workbooks", {}).get("title") or run.runbook)
    firing = run.alert_starts_at or incident.starts_at
    if incident.status == "resolved":
        resolved = "resolved" + (
            f" at {_when(incident.ended_at)} (after {_duration(incident.ended_at - firing)})"
            if incident.ended_at
            else ""
        )
    else:
        resolved = "still firing when last seen"
    source = describe_source(run)
    facts = [
        ("Incident", run.incident_id),
        ("Run", run.run_id),
        ("Alert", f"{run.alert_name} ({run.severity}), {run.alert_status} when the run started"),
        ("Fired", _when(firing)),
        ("Incident status", resolved),
        ("Runbook", f"{run.runbook} (version {run.runbook_hash})"),
        ("Data from", f"{source['label']}; {source['when']}"),
        ("Data window", source["window"] or "not recorded"),
        (
            "Run",
            f"{_when(run.started_at)} to {_when(run.finished_at)} ({run.duration_seconds:.1f} s)",
        ),
        ("Built by", f"incident-workbooks {run.package_version}"),
    ]
    if run.pruned_at:
        facts.append(("Pruned", f"{_when(run.pruned_at)}: notebook and evidence deleted"))
    return {
        "page_title": f"{run.alert_name} · {title} · {run.run_id}",
        "title": title,
        "run": run.model_dump(mode="json"),
        "service": run.service or run.labels.get("service") or "",
        "status": run.status,
        "error": run.error,
        "facts": facts,
        "labels": sorted(run.labels.items()),
        "annotations": sorted(alert.get("annotations", {}).items()),
        "generator_url": alert.get("generatorURL", ""),
        "findings": findings,
        "notes": [
            {"when": _when(note.created_at), "author": note.author, "text": note.text}
            for note in incident.notes
        ],
        "runs": [
            {
                "run_id": other.run_id,
                "status": other.status,
                "when": _when(other.started_at),
                "this": other.run_id == run.run_id,
            }
            for other in incident.runs
        ],
        "source": source,
        "generated_at": _when(datetime.now(UTC)),
        "version": package_version(),
        "csp": CONTENT_SECURITY_POLICY,
    }


def describe_source(run: RunRecord) -> dict[str, str]:
    """Where a run's data came from (live Prometheus or saved evidence) and when it was read.

    ``kind`` is ``live``, ``evidence`` or ``demo``; ``window`` is the time range it covered.
    """
    manifest = _manifest(run.path / EVIDENCE_DIR)
    window = manifest.get("window") or {}
    span = ""
    if window.get("start") and window.get("end"):
        span = f"{_when(window['start'])} to {_when(window['end'])}"
    read = f"read during the run, {_when(run.started_at)}"
    if run.source.startswith(("http://", "https://")):
        label = f"live Prometheus at {run.source}"
        return {"kind": "live", "label": label, "when": read, "window": span}
    if run.source == "demo":
        label = "saved evidence: the bundled demo incident, recorded from a real Prometheus"
        return {"kind": "demo", "label": label, "when": read, "window": span}
    origin = Path(run.source)
    recorded = manifest.get("source") or "an earlier run"
    when = f"replayed {_when(run.started_at)}; recorded from {recorded}"
    if origin.name == EVIDENCE_DIR and len(origin.parts) > 2:
        when += f" by run {origin.parent.name}"
    label = f"saved evidence in {run.source}"
    return {"kind": "evidence", "label": label, "when": when, "window": span}


def _manifest(evidence: Path) -> dict[str, Any]:
    try:
        return json.loads((evidence / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _alert(run: RunRecord) -> dict[str, Any]:
    try:
        payload = json.loads((run.path / ALERT_FILE).read_text(encoding="utf-8"))
        alerts = [
            a
            for a in payload.get("alerts", [])
            if a.get("labels", {}).get("alertname") == run.alert_name
        ]
        return alerts[0] if alerts else {}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def _when(moment: datetime | str | None) -> str:
    if moment is None:
        return "unknown"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _duration(elapsed: Any) -> str:
    minutes = int(elapsed.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"
