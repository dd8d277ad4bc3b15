"""Which runbook handles which alert, decided in one place.

An alert goes to the first of these that names a runbook:

1. its ``runbook`` label (the runbook id, e.g. ``runbook="high-latency"``);
2. its ``runbook_url`` annotation, Prometheus rules' convention, when the URL's last path
   segment (without ``.md``, ``.ipynb`` or ``.html``) is a runbook id; a URL that names no
   runbook (a team's wiki page) is passed over;
3. the config file's ``routing:`` rules, first match wins, for a team's own alertnames and
   labels, without editing a notebook;
4. the alertnames a runbook lists in its own ``metadata.workbooks.alerts``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from workbooks.core.alert import Alert, AlertGroup
from workbooks.core.config import Config, RoutingRule
from workbooks.core.durations import parse_duration
from workbooks.core.errors import ConfigError, UnknownRunbookError
from workbooks.core.paths import RUNBOOK_GROUPS

GROUPS = RUNBOOK_GROUPS  # a notebook's metadata.workbooks.group is one of these


@dataclass(frozen=True, kw_only=True)
class Runbook:
    id: str
    title: str
    alerts: tuple[str, ...]
    group: str
    summary: str
    path: Path
    # The runbook's own default baseline (metadata.workbooks.baseline, e.g. "7d" for weekly
    # traffic); None: the shared default. A caller's explicit baseline always wins.
    baseline: str | None = None

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
        baseline = meta.get("baseline")
        if baseline is not None:
            parse_duration(str(baseline))  # its ConfigError names the bad text
        return Runbook(
            id=str(meta["runbook"]),
            title=str(meta["title"]),
            alerts=tuple(alerts),
            group=meta["group"],
            summary=str(meta["summary"]),
            path=path,
            baseline=None if baseline is None else str(baseline).strip(),
        )
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise UnknownRunbookError(
            f"{path} is not a runbook notebook: it needs metadata.workbooks with runbook, title, "
            f"alerts (a list), group and summary, and optionally a baseline duration ({exc})"
        ) from exc


RUNBOOK_LABEL = "runbook"
RUNBOOK_URL_ANNOTATION = "runbook_url"
_PAGE_SUFFIXES = (".md", ".ipynb", ".html", ".htm")


class Runbooks(dict[str, Runbook]):
    """The runbooks by id, with the config's routing rules that send alerts to them.

    A plain dict of runbooks (an explicit ``runbook_id`` needs nothing else) that also carries
    ``routing``, so :func:`route` applies the config's rules wherever the runbooks go.
    """

    def __init__(
        self, runbooks: Iterable[tuple[str, Runbook]] = (), *, routing: Sequence[RoutingRule] = ()
    ) -> None:
        super().__init__(runbooks)
        self.routing: tuple[RoutingRule, ...] = tuple(routing)

    def rules_for(self, runbook_id: str) -> list[RoutingRule]:
        return [rule for rule in self.routing if rule.runbook == runbook_id]


def load_runbooks(directory: Path, *, routing: Sequence[RoutingRule] = ()) -> Runbooks:
    """Every runbook in a folder, by id, with the routing rules checked against them."""
    if not directory.is_dir():
        raise UnknownRunbookError(
            f"the runbook folder {directory} does not exist; set WORKBOOKS_NOTEBOOKS or "
            "'notebooks:' in the config file"
        )
    runbooks = Runbooks(routing=routing)
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
    for number, rule in enumerate(runbooks.routing, start=1):
        if rule.runbook not in runbooks:
            raise ConfigError(
                f"routing rule {number} ({rule.describe()}) sends alerts to runbook "
                f"{rule.runbook!r}, which is not in {directory}; known: {_known(runbooks)}. "
                "Fix 'routing:' in the config file"
            )
    return runbooks


def configured_runbooks(config: Config) -> Runbooks:
    """The configured runbook folder, with the config file's routing rules."""
    return load_runbooks(config.notebooks_dir, routing=config.routing)


def get_runbook(runbooks: dict[str, Runbook], runbook_id: str) -> Runbook:
    try:
        return runbooks[runbook_id]
    except KeyError:
        raise UnknownRunbookError(
            f"runbook {runbook_id!r} not found; known: {_known(runbooks)}"
        ) from None


def runbook_id_in_url(url: str) -> str:
    """``https://wiki/runbooks/high-latency.md#steps`` -> ``high-latency``: the last segment."""
    last = unquote(urlsplit(url.strip()).path).rstrip("/").rpartition("/")[2]
    for suffix in _PAGE_SUFFIXES:
        if last.lower().endswith(suffix):
            return last[: -len(suffix)]
    return last


@dataclass(frozen=True)
class Choice:
    """The runbook one alert goes to, and why (``workbook runbooks`` and logs say it)."""

    runbook: Runbook
    reason: str


def choose_runbook(alert: Alert, runbooks: dict[str, Runbook]) -> Choice | None:
    """The runbook for one alert, by the precedence in this module's docstring; None if none.

    A ``runbook`` label that names no runbook is an error: the alert rule asked for it by name.
    """
    label = alert.labels.get(RUNBOOK_LABEL, "").strip()
    if label:
        wanted = runbook_id_in_url(label)
        if wanted not in runbooks:
            raise UnknownRunbookError(
                f"alert {alert.name} carries the label {RUNBOOK_LABEL}={label!r}, which names "
                f"no runbook; known: {_known(runbooks)}. Fix the label in the alert rule"
            )
        return Choice(runbooks[wanted], f"label {RUNBOOK_LABEL}={label}")
    url = alert.annotations.get(RUNBOOK_URL_ANNOTATION, "")
    if url.strip() and (wanted := runbook_id_in_url(url)) in runbooks:
        return Choice(runbooks[wanted], f"annotation {RUNBOOK_URL_ANNOTATION}={url.strip()}")
    for number, rule in enumerate(getattr(runbooks, "routing", ()), start=1):
        if rule.matches(alert.labels):
            return Choice(runbooks[rule.runbook], f"routing rule {number} ({rule.describe()})")
    for runbook in runbooks.values():
        if alert.name in runbook.alerts:
            return Choice(runbook, f"alertname {alert.name} in {runbook.path.name}")
    return None


@dataclass(frozen=True)
class Route:
    runbook: Runbook
    alerts: tuple[Alert, ...]


def route(
    group: AlertGroup, runbooks: dict[str, Runbook], *, runbook_id: str | None = None
) -> list[Route]:
    """One route per runbook that handles some of the group's alerts.

    An explicit ``runbook_id`` takes every alert. Otherwise an alert that nothing routes is an
    error that says how to route it.
    """
    if runbook_id is not None:
        return [Route(get_runbook(runbooks, runbook_id), tuple(group.alerts))]
    routes: dict[str, list[Alert]] = {}
    unknown: set[str] = set()
    # Alerts of one alertname stay together, first alertname first, as the runs expect.
    for alert in (each for alerts in group.by_alertname().values() for each in alerts):
        choice = choose_runbook(alert, runbooks)
        if choice is None:
            unknown.add(alert.name)
            continue
        routes.setdefault(choice.runbook.id, []).append(alert)
    if unknown:
        handled = sorted({name for runbook in runbooks.values() for name in runbook.alerts})
        raise UnknownRunbookError(
            f"no runbook handles alertname {', '.join(sorted(unknown))}; handled: "
            f"{', '.join(handled) or '(none)'}. Name a runbook (workbook run RUNBOOK ...), give "
            f"the alert a {RUNBOOK_LABEL} label or a {RUNBOOK_URL_ANNOTATION} annotation ending "
            "in the runbook id, or add a rule under 'routing:' in the config file"
        )
    return [Route(runbooks[runbook_id], tuple(alerts)) for runbook_id, alerts in routes.items()]


def _known(runbooks: dict[str, Runbook]) -> str:
    return ", ".join(sorted(runbooks)) or "(none)"
