"""Which part of the service a process runs: ``all``, ``intake`` or ``worker`` (docs/scale.md).

``workbook serve`` runs ``all`` (accepts and runs: one machine) or ``intake`` (accepts and
queues, runs nothing); ``workbook worker`` runs ``worker`` (runs what the Redis queue holds,
accepts nothing). Intake and workers then scale apart, on as many hosts as needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from workbooks.core.config import Config
from workbooks.core.errors import ConfigError

Role = Literal["all", "intake", "worker"]
ROLES: tuple[Role, ...] = ("all", "intake", "worker")


def check_role(role: Role, config: Config, archive_dir: str | Path) -> None:
    """Refuse a role that cannot work as set up, saying what to set.

    Workers apart from intake take runs from a shared queue (Redis); on an object-store archive
    each host keeps its own cache, so they also need the shared ledger (PostgreSQL), or two hosts
    could each run, or each recover, the same run.
    """
    if role not in ("all", "intake", "worker"):
        raise ConfigError(f"unknown role {role!r}: use all, intake or worker")
    if role == "all":
        return
    if not config.service.redis_url:
        raise ConfigError(
            f"the {role} role hands runs to other processes through a shared queue: set "
            "WORKBOOKS_REDIS_URL (or pass --redis URL) on intake and every worker"
        )
    # `database` is the PostgreSQL setting (WORKBOOKS_DATABASE_URL, docs/database.md).
    if (
        isinstance(archive_dir, str)
        and "://" in archive_dir
        and not getattr(config, "database", None)
    ):
        raise ConfigError(
            f"the {role} role with the archive {archive_dir} needs the shared ledger: set "
            "WORKBOOKS_DATABASE_URL to a PostgreSQL database (docs/database.md) on intake and "
            "every worker"
        )


def worker_count(workers: int | None, config: Config) -> int:
    count = workers if workers is not None else config.service.workers
    count = count if count is not None else (os.cpu_count() or 1)
    if count < 0:
        raise ConfigError(f"workers must be 0 (accept only) or more, not {count}")
    return count
