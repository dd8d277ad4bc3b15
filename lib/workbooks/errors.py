"""``workbooks.errors`` as it always was (archived notebooks import it): see core.errors."""

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
]
