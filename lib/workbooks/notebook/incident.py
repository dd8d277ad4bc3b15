"""The in-notebook facade: one ``Incident`` per executed workbook.

A runbook notebook opens it from its parameters, asks it for named catalog queries (current
window plus the same window ``baseline`` earlier), records findings, and shows charts. Everything
the notebook read is saved as evidence beside it. A source that is down or a query without data
becomes a finding, never a crash, so an unattended run still archives what it could see.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from workbooks.core.config import Config, current_config, now
from workbooks.core.durations import parse_duration
from workbooks.core.errors import SourceError, SourceUnavailableError, WorkbooksError
from workbooks.core.findings import SUMMARY_MIME, Finding, ranked, summary_markdown
from workbooks.core.paths import runbook_group
from workbooks.core.redact import redact_url
from workbooks.notebook import ahead, charts, drawing
from workbooks.notebook.ahead import Ahead, Fetched, Ready
from workbooks.notebook.catalog import Catalog
from workbooks.notebook.display import (
    display,
    escalation_markdown,
    human_duration,
    key_value_table,
    show_markdown,
)
from workbooks.notebook.result import QueryResult, shifted
from workbooks.notebook.sources import (
    EvidenceWriter,
    Source,
    Window,
    choose_step,
    open_source,
    series_count,
    utc,
)

EVIDENCE_ENV = "WORKBOOKS_EVIDENCE_DIR"
# Range queries in flight at once from one kernel: enough to overlap a window with its
# baseline (and their network waits), few enough that a run never floods Prometheus.
QUERY_CONCURRENCY = 4
_QUERIES = ThreadPoolExecutor(QUERY_CONCURRENCY, thread_name_prefix="workbooks-query")


class Incident:
    """What a workbook knows about the alert, and its way to the metrics and the findings."""

    def __init__(
        self,
        *,
        runbook: str,
        alert_name: str,
        severity: str = "warning",
        status: str = "firing",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        starts_at: str | datetime,
        ends_at: str | datetime | None = "",
        group_key: str = "",
        fingerprints: Sequence[str] = (),
        lookback: str | timedelta = "2h",
        baseline: str | timedelta = "1d",
        source: str = "demo",
        config: Config | None = None,
    ) -> None:
        self.runbook = runbook
        self.alert_name = alert_name
        self.severity = severity
        self.status = status
        self.labels = dict(labels or {})
        self.annotations = dict(annotations or {})
        self.starts_at = utc(starts_at)
        self.ends_at = utc(ends_at) if ends_at else None
        self.group_key = group_key
        self.fingerprints = list(fingerprints)
        self.lookback, self.baseline_offset = parse_duration(lookback), parse_duration(baseline)
        self.config = config or current_config()
        self.catalog = Catalog.load(self.config.queries)
        self.findings: list[Finding] = []
        self._source_spec = source
        self._source: Source | None = None
        self._source_error: str | None = None
        self._evidence: EvidenceWriter | None = None
        self._open_source()
        self.window = self._window()
        self.step_seconds = choose_step(
            self.window,
            max_points=self.config.prometheus.max_points,
            min_step_seconds=self.config.prometheus.min_step_seconds,
        )
        self._ahead = Ahead(ahead.take_expected(), self._fetch_ahead)
        self._ahead.top_up()  # the first queries start while the first cells run

    # --- set-up -------------------------------------------------------------------------------
    def _open_source(self) -> None:
        try:
            self._source = open_source(
                self._source_spec, runbook=self.runbook, settings=self.config.prometheus
            )
        except WorkbooksError as exc:
            self._source_error = str(exc)
            self.record(
                Finding(
                    severity="critical",
                    title="The metrics source could not be opened",
                    detail=str(exc),
                    subject={"source": redact_url(str(self._source_spec))},
                    recommendation="Fix the source and run the workbook again (workbook replay "
                    "or workbook run); nothing below is based on data.",
                ),
                show=False,
            )

    def _window(self) -> Window:
        recorded = getattr(self._source, "window", None)
        if recorded is not None:
            return recorded
        end = self.ends_at or now(self.config)
        start = self.starts_at - self.lookback
        return Window(start, max(end, self.starts_at + timedelta(minutes=5)))

    @property
    def source_description(self) -> str:
        return getattr(self._source, "description", redact_url(str(self._source_spec)))

    @property
    def service(self) -> str:
        return self.labels.get("service", "")

    def _evidence_writer(self) -> EvidenceWriter | None:
        if self._evidence is None:
            folder = os.environ.get(EVIDENCE_ENV, "evidence")
            if folder.lower() in ("", "off", "none"):
                return None
            self._evidence = EvidenceWriter(
                Path(folder), window=self.window, source=self.source_description
            )
        return self._evidence

    # --- queries ------------------------------------------------------------------------------
    def query(
        self, name: str, *, promql: str | None = None, baseline: bool = True, **values: Any
    ) -> QueryResult:
        """Run catalog query ``name`` (or ``promql`` by hand) on the window and its baseline.

        ``values`` fill placeholders beyond the alert's labels (``quantile=0.99``). No data, a
        failed query or an unreachable source are recorded as findings and give an empty result.
        """
        entry = self.catalog[name]
        placeholders = {**self.labels, **values}
        title = entry.render_title(placeholders)
        result = QueryResult(
            name=name,
            title=title,
            query=promql or "",
            unit=entry.unit,
            window=self.window,
            step_seconds=self.step_seconds,
        )
        try:
            result.query = promql or entry.render(placeholders)
        except WorkbooksError as exc:
            return self._failed(result, exc)
        if self._source is None:
            result.error = self._source_error
            return result
        roles = self._roles(baseline)
        key = self._evidence_key(name, values)
        asked = (key, result.query, baseline)
        # Fetched ahead of this cell (notebook/ahead.py), or now: the window and its baseline
        # at once, then handled in order as before.
        pending = (None if promql else self._ahead.take(name, asked)) or self._fetch(asked)
        writer: EvidenceWriter | None = None
        with ExitStack() as held:  # a query's results in the evidence manifest with one write
            for (role, window), future in zip(roles, pending, strict=True):
                try:
                    frame = future.result()
                except SourceUnavailableError as exc:
                    return self._unreachable(result, exc)
                except SourceError as exc:
                    return self._failed(result, exc)
                if writer is None and (writer := self._evidence_writer()):
                    held.enter_context(writer.together())
                saved = writer and writer.save(
                    name=key,
                    role=role,
                    query=result.query,
                    window=window,
                    step_seconds=self.step_seconds,
                    frame=frame,
                    recorded=self._recorded_file(key, result.query, role),
                )
                if role == "current":
                    result.current, series = frame, saved
                else:
                    result.baseline = shifted(frame, self.baseline_offset)
        self._describe_query(result, series)
        if result.empty:
            self.record(
                Finding(
                    severity="warning",
                    title=f"No data for {name}",
                    detail=f"no data for {name}: {result.query}",
                    subject={"query": name},
                    recommendation="Check that the metric exists under this name and labels "
                    "(override the query in the config's 'queries:' block if it is named "
                    "differently).",
                )
            )
        return result

    def _roles(self, baseline: bool) -> list[tuple[str, Window]]:
        roles = [("current", self.window)]
        if baseline:
            roles.append(("baseline", self.window.shifted(self.baseline_offset)))
        return roles

    def _recorded_file(self, key: str, query: str, role: str) -> Path | None:
        """The file a replayed result was read from (None from a live source)."""
        recorded_file = getattr(self._source, "recorded_file", None)
        return recorded_file(key, query, role=role) if recorded_file is not None else None

    def _fetch(self, query: Fetched) -> list[Future[pd.DataFrame]]:
        """The query's window, and its baseline if asked, sent at once."""
        source, (key, text, baseline) = self._source, query
        assert source is not None
        return [
            _QUERIES.submit(source.range_query, key, text, window, self.step_seconds, role=role)
            for role, window in self._roles(baseline)
        ]

    def _fetch_ahead(self, expected: Ready) -> tuple[Fetched, list[Future[Any]]] | None:
        name, baseline, values = expected
        if self._source is None or name not in self.catalog:
            return None
        try:
            text = self.catalog[name].render({**self.labels, **dict(values)})
        except WorkbooksError:
            return None  # the cell will say why
        query = (self._evidence_key(name, dict(values)), text, baseline)
        return query, self._fetch(query)

    @staticmethod
    def _evidence_key(name: str, values: Mapping[str, Any]) -> str:
        if not values:
            return name
        return name + "[" + ",".join(f"{k}={v}" for k, v in sorted(values.items())) + "]"

    def _unreachable(self, result: QueryResult, exc: SourceUnavailableError) -> QueryResult:
        self._ahead.stop()
        description = self.source_description
        self._source_error = str(exc)
        self._source = None
        self.record(
            Finding(
                severity="critical",
                title="The metrics source is unreachable",
                detail=f"{exc} The findings below are incomplete.",
                subject={"source": description},
                recommendation="Check Prometheus, then re-run this workbook "
                "(workbook run ... --prometheus URL).",
            )
        )
        result.error = str(exc)
        return result

    def _failed(self, result: QueryResult, exc: Exception) -> QueryResult:
        result.error = str(exc)
        self.record(
            Finding(
                severity="warning",
                title=f"Query {result.name} failed",
                detail=str(exc),
                subject={"query": result.name},
                recommendation="Fix the query in the config's 'queries:' block or in this cell.",
            )
        )
        return result

    def _describe_query(self, result: QueryResult, series: int | None = None) -> None:
        series = series_count(result.current) if series is None else series
        show_markdown(
            f"<details><summary><code>{result.name}</code>: {series} series, step "
            f"{result.step_seconds}s</summary>\n\n```promql\n{result.query}\n```\n</details>"
        )

    # --- findings and display -----------------------------------------------------------------
    def record(self, *findings: Finding, show: bool = True) -> None:
        for finding in findings:
            self.findings.append(finding)
            if show:
                display(finding.mime_bundle(), raw=True)

    def markdown(self, text: str) -> None:
        show_markdown(text)

    def note(self, text: str, *, author: str | None = None) -> Any:
        """Record an action taken, with its author and time, on this alert's archived incident.

        The incident is the one the runner archives for this alert (same group key, start time
        and alertname), in the configured archive (``WORKBOOKS_ARCHIVE``). The note goes into
        the incident folder's ``notes.jsonl``, so new runs and reindexing keep it. Returns the
        :class:`workbooks.archive.store.Note`.
        """
        import getpass
        import html

        from workbooks.archive.store import Archive, incident_id
        from workbooks.core.errors import RunNotFoundError

        archive = Archive.from_config(self.config)  # a folder, or an s3:// archive
        incident = incident_id(self.group_key, self.starts_at, self.alert_name)
        try:
            note = archive.add_note(
                incident, text, author=author or os.environ.get("USER") or getpass.getuser()
            )
        except RunNotFoundError as exc:
            raise RunNotFoundError(
                f"this workbook's incident {incident} is not in the archive {archive.root}: set "
                "WORKBOOKS_ARCHIVE to the archive folder before starting JupyterLab (`workbook "
                'open` does), or add the note with `workbook note INCIDENT "text"`'
            ) from exc
        show_markdown(
            f"📝 Note added to incident `{note.incident_id}` by {html.escape(note.author)} at "
            f"{note.created_at:%Y-%m-%d %H:%M} UTC: {html.escape(note.text)}"
        )
        return note

    def show(self, chart: Any) -> None:
        """Show a chart (a run's beside its cells: :mod:`.drawing`); free it if pyplot made it."""
        if not drawing.show(chart):
            display(chart)
        if (pyplot := sys.modules.get("matplotlib.pyplot")) and isinstance(chart, pyplot.Figure):
            pyplot.close(chart)

    def chart_title(self, text: str) -> str:
        subject = ", ".join(f"{k}={v}" for k, v in self.labels.items() if k != "alertname")
        return f"{text}\n{self.alert_name} · {subject}" if subject else f"{text}\n{self.alert_name}"

    def describe(self) -> None:
        """Section 1: the alert in a table, and the pending findings (a source that failed)."""
        firing_for = self.window.end - self.starts_at
        rows = [
            ("alert", self.alert_name),
            ("severity", self.severity),
            ("status", self.status),
            ("started", f"{self.starts_at:%Y-%m-%d %H:%M:%S} UTC"),
            (
                "ended" if self.ends_at else "firing for",
                f"{self.ends_at:%Y-%m-%d %H:%M:%S} UTC"
                if self.ends_at
                else human_duration(firing_for),
            ),
            ("window", self._window_text()),
            ("source", self.source_description),
            *((f"label `{k}`", v) for k, v in self.labels.items()),
            *((f"annotation `{k}`", v) for k, v in self.annotations.items()),
        ]
        show_markdown(key_value_table(rows))
        for finding in self.findings:
            display(finding.mime_bundle(), raw=True)

    def _window_text(self) -> str:
        return (
            f"{self.window.start:%H:%M} to {self.window.end:%H:%M} UTC (lookback "
            f"{human_duration(self.lookback)}, "
            f"baseline {human_duration(self.baseline_offset)} earlier)"
        )

    def summary(self, *, limit: int = 5) -> None:
        """The Summary: top findings, worst first (the runner copies it to the top)."""
        display(
            {
                "text/markdown": summary_markdown(self.findings, limit=limit),
                SUMMARY_MIME: [finding.to_dict() for finding in ranked(self.findings)[:limit]],
            },
            raw=True,
        )

    def escalation(self) -> None:
        """Section 6: whom to call, the contacts of this runbook's group (a security runbook
        pages security), else the config's default escalation block."""
        critical = any(f.severity == "critical" for f in self.findings)
        group = runbook_group(self.runbook, self.config.notebooks_dir)
        contacts = self.config.escalation_for(group)
        own = group is not None and group in self.config.escalation.groups
        lead = f"Contacts of the **{group}** group (`escalation.groups.{group}`).\n\n"
        show_markdown((lead if own else "") + escalation_markdown(contacts, critical=critical))

    def timeseries(self, result: QueryResult, *, by: str | None = None, **options: Any) -> None:
        """Chart a result against its baseline with the alert start marked, or say no data."""
        if result.empty:
            self.show(charts.no_data(result.title, f"no data for {result.name}: {result.query}"))
            return
        self.show(
            charts.timeseries(
                result.current,
                baseline=result.baseline,
                by=by,
                title=self.chart_title(result.title),
                unit=result.unit,
                alert_start=pd.Timestamp(self.starts_at),
                **options,
            )
        )
