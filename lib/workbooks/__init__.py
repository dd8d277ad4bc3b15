"""Incident Workbooks: parameterized Jupyter runbooks, run from alerts, archived as evidence.

Notebooks call :func:`open_incident`; everything else is reached through its modules
(``workbooks.running.runner``, ``workbooks.archive.store``, ``workbooks.cli``). Importing the
package is cheap: pandas and matplotlib load only when an incident is opened.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, ClassVar

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


class _OptionalImportsRefused:
    """Two libraries import optional packages that no run here uses, at a cost to every process
    that runs a notebook (issue 12). Only their own import of those packages is refused: they
    then carry on as they do when the package is absent, and anything else importing the same
    package, in the same process or later, gets it as usual.

    - papermill.iorw imports pyarrow.fs (for hdfs:// notebooks) and papermill.s3 (boto3): about
      0.2 s. Runs read and write local notebooks only (the archive's s3:// is our own fsspec
      code); papermill registers its "missing dependency" handlers instead.
    - jsonschema._format imports the checkers of optional string formats (uri, idn-hostname,
      duration, color...; jupyter-events' ``jsonschema[format-nongpl]`` installs them): about
      55 ms of ``import nbformat``, so of every run's command. Of them, rfc3987_syntax builds a
      Lark grammar at import, about 1 s (python-jsonschema/jsonschema#1428). Formats are checked
      only through a ``FormatChecker``, which neither nbformat, papermill nor this package uses;
      jsonschema skips a format whose checker it could not import.

    A finder is any object with ``find_spec``: not subclassing ``importlib.abc.MetaPathFinder``
    spares every process importing that module (with importlib.resources: 40 ms, issue 12).
    """

    _REFUSED: ClassVar[dict[str, frozenset[str]]] = {
        "papermill.iorw": frozenset({"pyarrow", "pyarrow.fs", "papermill.s3"}),
        "jsonschema._format": frozenset(
            {
                "fqdn",
                "idna",
                "isoduration",
                "jsonpointer",
                "rfc3339_validator",
                "rfc3986_validator",
                "rfc3987",
                "rfc3987_syntax",
                "uri_template",
                "webcolors",
            }
        ),
    }
    _NAMES: ClassVar[frozenset[str]] = frozenset().union(*_REFUSED.values())

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname in self._NAMES:
            for importer, names in self._REFUSED.items():
                if fullname in names and _imported_by(importer):
                    raise ImportError(f"{fullname} is not needed by {importer} here")
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


if not any(isinstance(finder, _OptionalImportsRefused) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OptionalImportsRefused())

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
