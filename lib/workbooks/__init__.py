"""Incident Workbooks: parameterized Jupyter runbooks, run from alerts, archived as evidence.

Notebooks call :func:`open_incident`; everything else is reached through its modules
(``workbooks.running.runner``, ``workbooks.archive.store``, ``workbooks.cli``). Importing the
package is cheap: pandas and matplotlib load only when an incident is opened.
"""

from __future__ import annotations

import sys
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


class _PapermillWithoutRemoteStores:
    """papermill.iorw imports pyarrow.fs (for hdfs:// notebooks) and papermill.s3 (boto3) when
    they are installed: about 0.2 s of every process that runs a notebook, competing with the
    kernel's start. Runs here read and write local notebooks only (the archive's s3:// is our
    own fsspec code), so only papermill's own import of those two is refused: papermill then
    registers its "missing dependency" handlers, as it does when they are absent. Anything else
    importing pyarrow.fs or boto3, in the same process or later, gets them as usual.

    A finder is any object with ``find_spec``: not subclassing ``importlib.abc.MetaPathFinder``
    spares every process importing that module (with importlib.resources: 40 ms, issue 12).
    """

    _REFUSED = frozenset({"pyarrow", "pyarrow.fs", "papermill.s3"})

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname in self._REFUSED and _imported_by("papermill.iorw"):
            raise ImportError(f"{fullname} is not needed by papermill here")
        return None


def _imported_by(module: str) -> bool:
    frame = sys._getframe(2)
    for _ in range(40):  # the import machinery's own frames sit between
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == module:
            return True
        frame = frame.f_back
    return False


if not any(isinstance(finder, _PapermillWithoutRemoteStores) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PapermillWithoutRemoteStores())

if TYPE_CHECKING:
    from workbooks.notebook.incident import Incident


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


def __getattr__(name: str) -> Any:
    """``workbooks.__version__``, looked up when asked for: importlib.metadata costs every
    process 35 ms at import, and only the archive's records and ``--version`` need it."""
    if name == "__version__":
        from workbooks.archive.records import package_version

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_incident(runbook: str, **parameters: Any) -> Incident:
    """A notebook's entry point: its parameters in, an :class:`Incident` out."""
    from workbooks.notebook.incident import Incident

    return Incident(runbook=runbook, **parameters)
