"""Which runbook handles which alert: each notebook says so in ``metadata.workbooks``.

There is no second table to keep in step: a runbook describes itself (id, title, the alertnames
it handles, group, one-line summary), and routing reads those descriptions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from workbooks.core.alert import Alert, AlertGroup
from workbooks.core.errors import UnknownRunbookError

GROUPS = ("service", "model", "infrastructure", "security", "mobile")


@dataclass(frozen=True, kw_only=True)
class Runbook:
    id: str
    title: str
    alerts: tuple[str, ...]
    group: str
    summary: str
    path: Path

    @property
    def content_hash(self) -> str:
        """Which version of the runbook ran: sha256 of the stored notebook, first 12 hex digits."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]


def read_runbook(path: Path) -> Runbook:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        meta = notebook["metadata"]["workbooks"]
        alerts = meta["alerts"]
        if not isinstance(alerts, list) or not all(isinstance(a, str) and a for a in alerts):
            raise TypeError("alerts must be a list of alertnames")
        if meta["group"] not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}")
        return Runbook(
            id=str(meta["runbook"]),
            title=str(meta["title"]),
            alerts=tuple(alerts),
            group=meta["group"],
            summary=str(meta["summary"]),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UnknownRunbookError(
            f"{path} is not a runbook notebook: it needs metadata.workbooks with runbook, title, "
            f"alerts (a list), group and summary ({exc})"
        ) from exc


def load_runbooks(directory: Path) -> dict[str, Runbook]:
    """Every runbook in a folder, by id."""
    if not directory.is_dir():
        raise UnknownRunbookError(
            f"the runbook folder {directory} does not exist; set WORKBOOKS_NOTEBOOKS or "
            "'notebooks:' in the config file"
        )
    runbooks: dict[str, Runbook] = {}
    handled: dict[str, str] = {}
    for path in sorted(directory.glob("*.ipynb")):
        runbook = read_runbook(path)
        if runbook.id in runbooks:
            raise UnknownRunbookError(
                f"two notebooks claim runbook id {runbook.id!r}: {runbooks[runbook.id].path} "
                f"and {path}"
            )
        for alertname in runbook.alerts:
            if alertname in handled:
                raise UnknownRunbookError(
                    f"alertname {alertname!r} is claimed by both {handled[alertname]!r} and "
                    f"{runbook.id!r}; an alert routes to one runbook"
                )
            handled[alertname] = runbook.id
        runbooks[runbook.id] = runbook
    return runbooks


def get_runbook(runbooks: dict[str, Runbook], runbook_id: str) -> Runbook:
    try:
        return runbooks[runbook_id]
    except KeyError:
        known = ", ".join(sorted(runbooks)) or "(none)"
        raise UnknownRunbookError(f"runbook {runbook_id!r} not found; known: {known}") from None


@dataclass(frozen=True)
class Route:
    runbook: Runbook
    alerts: tuple[Alert, ...]


def route(
    group: AlertGroup, runbooks: dict[str, Runbook], *, runbook_id: str | None = None
) -> list[Route]:
    """One route per runbook that handles some of the group's alerts.

    An explicit ``runbook_id`` takes every alert. Otherwise an alertname that no runbook handles
    is an error listing the alertnames that are handled.
    """
    if runbook_id is not None:
        return [Route(get_runbook(runbooks, runbook_id), tuple(group.alerts))]
    handlers = {name: runbook for runbook in runbooks.values() for name in runbook.alerts}
    routes: dict[str, list[Alert]] = {}
    unknown = []
    for name, alerts in group.by_alertname().items():
        if name not in handlers:
            unknown.append(name)
            continue
        routes.setdefault(handlers[name].id, []).extend(alerts)
    if unknown:
        known = ", ".join(sorted(handlers)) or "(none)"
        raise UnknownRunbookError(
            f"no runbook handles alertname {', '.join(sorted(unknown))}; handled: {known}. "
            "Name a runbook explicitly (workbook run RUNBOOK ...) or add the alertname to a "
            "runbook's metadata.workbooks.alerts"
        )
    return [Route(runbooks[runbook_id], tuple(alerts)) for runbook_id, alerts in routes.items()]
