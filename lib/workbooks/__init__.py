"""Incident Workbooks: parameterized Jupyter runbooks, run from alerts, archived as evidence.

Notebooks call :func:`open_incident`; everything else is reached through its modules
(``workbooks.running.runner``, ``workbooks.archive.store``, ``workbooks.cli``). Importing the
package is cheap: pandas and matplotlib load only when an incident is opened.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from workbooks.core.errors import (
    ArchiveError,
    BadAlertError,
    ConfigError,
    EvidenceMissingError,
    QueryFailedError,
    RunFailedError,
    RunNotFoundError,
    SourceError,
    SourceUnavailableError,
    UnknownRunbookError,
    WorkbooksError,
)

# jsonschema imports rfc3987_syntax when it is installed (jupyter-events' jsonschema[format-nongpl]
# pulls it in), and that module builds a Lark grammar at import: about 1 s added to every
# `import nbformat`, so to papermill and every run. Nothing here validates IRI formats, so
# jsonschema is left to skip that optional checker, as it does when the package is absent.
# Upstream: https://github.com/python-jsonschema/jsonschema/issues/1428
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident

try:
    __version__ = version("incident-workbooks")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ArchiveError",
    "BadAlertError",
    "ConfigError",
    "EvidenceMissingError",
    "QueryFailedError",
    "RunFailedError",
    "RunNotFoundError",
    "SourceError",
    "SourceUnavailableError",
    "UnknownRunbookError",
    "WorkbooksError",
    "__version__",
    "open_incident",
]


def open_incident(runbook: str, **parameters: Any) -> Incident:
    """A notebook's entry point: its parameters in, an :class:`Incident` out."""
    from workbooks.notebook.incident import Incident

    return Incident(runbook=runbook, **parameters)
