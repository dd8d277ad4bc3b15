"""Run summaries sent on after each unattended run: Slack, or anything else apprise speaks.

The text comes from a Jinja2 template (``templates/notification.md.j2`` unless the config names
another). Every value put into it is made inert first: label values come from whoever can fire
an alert, and Slack turns ``<!channel>`` into a mention of everyone in the channel.

A notification that cannot be sent is logged and counted; it never fails or loses the run.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import apprise
import jinja2

from workbooks.archive.store import NOTEBOOK_FILE, Archive, RunRecord
from workbooks.core.config import Config
from workbooks.core.errors import ConfigError, WorkbooksError
from workbooks.core.findings import Finding, ranked
from workbooks.core.paths import PROJECT_ROOT, runbook_group
from workbooks.core.redact import target_label

DEFAULT_TEMPLATE = PROJECT_ROOT / "templates" / "notification.md.j2"
TOP_FINDINGS = 3
_MAX_VALUE_CHARS = 300
_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
_NOTIFY_TYPE = {"succeeded": apprise.NotifyType.SUCCESS, "failed": apprise.NotifyType.FAILURE}

log = logging.getLogger(__name__)
_plugins_loaded = threading.Lock()
_loaded = False


@dataclass(frozen=True)
class Delivery:
    """How sending one summary went: targets reached, and the (redacted) ones that failed."""

    sent: int = 0
    failed: list[str] = field(default_factory=list)


def inert(value: Any) -> str:
    """A value safe to put in a message: one line, no markup that pings or links, bounded.

    ``<`` and ``>`` become look-alikes because Slack reads ``<!channel>``, ``<@U123>`` and
    ``<url|text>`` even after apprise escapes them.
    """
    text = " ".join(str(value).split())
    text = text.replace("<", "‹").replace(">", "›")
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        # Every {{ value }} passes through inert(); the template's own text is left as written.
        finalize=lambda value: "" if value is None else inert(value),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # markdown, not HTML; inert() does the escaping that matters
    )


def template_path(config: Config) -> Path:
    return (
        Path(config.notifications.template) if config.notifications.template else DEFAULT_TEMPLATE
    )


def render(record: RunRecord, findings: Sequence[Finding], *, config: Config) -> tuple[str, str]:
    """The (title, markdown body) of the summary of one archived run."""
    path = template_path(config)
    if not path.is_file():
        raise ConfigError(
            f"the notification template {path} does not exist; set notifications.template in "
            f"the config file to a Jinja2 file, or restore {DEFAULT_TEMPLATE}"
        )
    ordered = ranked(findings)
    context = {
        "run": record,
        "alert_name": record.alert_name,
        "severity": record.severity,
        "alert_status": record.alert_status,
        "status": record.status,
        "service": record.service or "",
        "labels": record.labels,
        "incident": record.incident_id,
        "run_id": record.run_id,
        "runbook": record.runbook,
        "duration_seconds": f"{record.duration_seconds:.1f}",
        "error": (record.error or {}).get("message"),
        "findings": [
            {"icon": _ICON[finding.severity], "severity": finding.severity, "title": finding.title}
            for finding in ordered[:TOP_FINDINGS]
        ],
        "more_findings": max(len(ordered) - TOP_FINDINGS, 0),
        "artifact": str(record.path / NOTEBOOK_FILE),
        "show_command": f"workbook show {record.run_id}",
        "escalation": config.escalation_for(runbook_group(record.runbook, config.notebooks_dir)),
    }
    try:
        template = _environment(path.parent).get_template(path.name)
        body = template.render(context).strip() + "\n"
    except jinja2.TemplateError as exc:
        raise ConfigError(f"the notification template {path} cannot be rendered: {exc}") from exc
    verdict = "investigated" if record.status == "succeeded" else "run FAILED"
    title = inert(f"{record.alert_name} ({record.severity}): {record.runbook} {verdict}")
    return title, body


def send(title: str, body: str, targets: Sequence[str], *, status: str = "succeeded") -> Delivery:
    """Send to each apprise URL on its own, so that one failing target spoils no other."""
    load_plugins()
    sent, failed = 0, []
    for url in targets:
        plugin = apprise.Apprise.instantiate(url)
        if not plugin:
            failed.append(target_label(url))
            log.warning("notification target %s is not a URL apprise knows", target_label(url))
            continue
        # Only scheme and host in logs: a path or query may hold a webhook's secret.
        where = urlsplit(plugin.url(privacy=True))
        name = f"{where.scheme}://{where.netloc}"
        try:
            ok = plugin.notify(
                body=body,
                title=title,
                notify_type=_NOTIFY_TYPE.get(status, apprise.NotifyType.INFO),
                body_format=apprise.NotifyFormat.MARKDOWN,
            )
        except Exception as exc:  # a plugin bug must not reach the run
            log.warning("notification to %s raised %s", name, exc)
            ok = False
        if ok:
            sent += 1
        else:
            failed.append(name)
            log.warning("notification to %s failed", name)
    return Delivery(sent=sent, failed=failed)


def targets_for(runbook: str, config: Config) -> list[str]:
    """Where summaries of ``runbook``'s runs go: its group's targets, else the default ones."""
    return config.notifications.targets_for(runbook_group(runbook, config.notebooks_dir))


def notify_run(record: RunRecord, findings: Sequence[Finding], *, config: Config) -> Delivery:
    """Render the run's summary and send it to its runbook group's targets; never raises."""
    targets = targets_for(record.runbook, config)
    if not targets:
        return Delivery()
    try:
        title, body = render(record, findings, config=config)
    except ConfigError as exc:
        log.error("no notification for run %s: %s", record.run_id, exc)
        return Delivery(failed=[target_label(url) for url in targets])
    return send(title, body, targets, status=record.status)


def notify_outcome(
    records: Sequence[RunRecord],
    error: str | None,
    *,
    archive: Archive,
    config: Config,
    incident: str,
) -> list[Delivery]:
    """Summaries of a queued run's archived records, or word that it could not run at all."""
    if not config.notifications.any_targets:
        return []
    deliveries = []
    for record in records:
        try:
            findings = archive.findings(record)
        except WorkbooksError:  # the summary goes out without them
            findings = []
        deliveries.append(notify_run(record, findings, config=config))
    if error is not None:
        title = "a workbook could not run"
        body = f"Incident `{inert(incident)}`: {inert(error)}\n"
        # Which runbook it was for is unknown here: word goes to the default targets.
        if config.notifications.targets:
            deliveries.append(send(title, body, config.notifications.targets, status="failed"))
    return deliveries


def load_plugins() -> None:
    """Load apprise's plugins once, with its import-time DeprecationWarning silenced.

    apprise's e-mail plugin imports ``imghdr`` (deprecated in Python 3.11) when plugins load,
    the first time a URL is parsed. Doing that once here, at a known moment, keeps the warning
    out of worker threads, where ``catch_warnings`` would not be thread-safe.
    """
    global _loaded
    with _plugins_loaded:
        if _loaded:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*imghdr.*", category=DeprecationWarning)
            apprise.Apprise.instantiate("json://127.0.0.1/")
        _loaded = True
