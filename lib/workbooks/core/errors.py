"""The exceptions this package raises, all under one base.

    WorkbooksError
    ├── BadAlertError          the alert payload is not a valid Alertmanager webhook (v4)
    ├── ConfigError            the config file or an environment variable is wrong
    ├── UnknownRunbookError    no runbook by that id, or none handles that alertname
    ├── SourceError            a metrics source could not answer
    │   ├── SourceUnavailableError   Prometheus unreachable, timing out, or refusing
    │   ├── QueryFailedError         Prometheus rejected a query (bad PromQL, too many points)
    │   └── EvidenceMissingError     a replay asked for a query the evidence does not hold
    ├── RunFailedError         a workbook run ended in error (its artifact is archived all the same)
    ├── AuthoringError         ``workbook new`` refused: a bad runbook id, group or alertname, or
    │                          the runbook exists already
    └── ArchiveError           the archive could not be read or written
        └── RunNotFoundError     no run or incident has that id (bad input, not a broken archive)

Third-party errors (requests, prometheus-api-client, papermill, nbclient) are wrapped where they
enter this package, ``raise XError(message) from exc``, and every message says what to do next.
The CLI alone turns these into exit codes: bad input is 2, a failed run is 1.
"""

from __future__ import annotations


class WorkbooksError(Exception):
    """Base of every error this package raises on purpose."""


class BadAlertError(WorkbooksError):
    """The alert payload is malformed; ``field`` names the offending field when known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(WorkbooksError):
    """The configuration file or an environment variable holds a value we cannot use."""


class UnknownRunbookError(WorkbooksError):
    """No runbook has this id, or no runbook handles this alertname."""


class SourceError(WorkbooksError):
    """A metrics source could not answer a query."""


class SourceUnavailableError(SourceError):
    """Prometheus is unreachable, too slow, or refuses us (auth, 5xx)."""


class QueryFailedError(SourceError):
    """Prometheus answered, but rejected the query itself."""


class EvidenceMissingError(SourceError):
    """Replaying from saved evidence, a query was asked that the evidence does not hold."""


class RunFailedError(WorkbooksError):
    """A workbook run ended in error; ``run`` is its archived record."""

    def __init__(self, message: str, *, run: object | None = None) -> None:
        super().__init__(message)
        self.run = run


class AuthoringError(WorkbooksError):
    """A new runbook cannot be written as asked (bad input, or it would overwrite one)."""


class ArchiveError(WorkbooksError):
    """The archive could not be read or written."""


class RunNotFoundError(ArchiveError):
    """No archived run or incident has this id."""
