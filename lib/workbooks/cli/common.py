"""What the commands share: the session, error handling, option types and printing."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from workbooks.archive.store import Archive, RunRecord
from workbooks.core.config import Config, load_config, parse_duration
from workbooks.core.errors import (
    BadAlertError,
    ConfigError,
    RunNotFoundError,
    UnknownRunbookError,
    WorkbooksError,
)
from workbooks.core.findings import Finding, ranked

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
DEMO_DIR = Path(__file__).parents[1] / "demo"
_BAD_INPUT = (BadAlertError, ConfigError, UnknownRunbookError, RunNotFoundError)
_ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType):
    """A duration option; ``as_text`` keeps the text (notebook parameters are text)."""

    name = "duration"

    def __init__(self, *, as_text: bool = False) -> None:
        self.as_text = as_text

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            parsed = parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)
        return str(value).strip() if self.as_text else parsed


@dataclass(frozen=True)
class _Session:
    config_file: Path | None
    archive_dir: Path | None

    def config(self) -> Config:
        config = load_config(self.config_file)
        if self.archive_dir is not None:
            config = config.model_copy(update={"archive": str(self.archive_dir)})
        return config

    def archive(self, config: Config | None = None) -> Archive:
        return Archive((config or self.config()).archive_dir)


def _handles_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except _BAD_INPUT as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except WorkbooksError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _report(records: Sequence[RunRecord], archive: Archive, *, as_json: bool) -> None:
    """What ran, where the artifact is, the top findings; exit 1 if a run failed."""
    if as_json:
        documents = [archive.show(record.run_id) for record in records]
        shown = documents[0] if len(documents) == 1 else documents
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        for number, record in enumerate(records):
            if number:
                click.echo()
            _describe(record, archive.findings(record), limit=5)
    failed = [record for record in records if record.status == "failed"]
    for record in failed:
        message = (record.error or {}).get("message", "unknown error")
        click.echo(
            f"error: run {record.run_id} failed: {message}; archived all the same in {record.path}",
            err=True,
        )
    if failed:
        sys.exit(EXIT_RUN_FAILED)


def _describe(record: RunRecord, findings: list[Finding], *, limit: int | None) -> None:
    click.echo(
        f"{record.runbook} for {record.alert_name} ({record.severity}, {record.alert_status}): "
        f"{record.status} in {record.duration_seconds:.1f} s"
    )
    click.echo(f"  run       {record.run_id}")
    click.echo(f"  incident  {record.incident_id}")
    click.echo(f"  source    {record.source}")
    click.echo(f"  artifact  {record.path / 'workbook.ipynb'}")
    if record.error:
        click.echo(f"  error     {record.error['kind']}: {record.error['message']}")
    ordered = ranked(findings)
    if not ordered:
        click.echo("  no findings recorded")
    for finding in ordered[:limit]:
        click.echo(f"  {_ICON[finding.severity]} {finding.severity}: {finding.title}")
        if limit is None:
            for extra in (
                finding.detail,
                finding.recommendation and f"next: {finding.recommendation}",
            ):
                if extra:
                    click.echo(f"      {extra}")
    if limit is not None and len(ordered) > limit:
        click.echo(f"  … and {len(ordered) - limit} more (workbook show {record.run_id})")


def _top_finding(record: RunRecord) -> str:
    if record.status == "failed":
        return f"run failed: {(record.error or {}).get('kind', '?')}"
    if record.top_finding_title is None:
        return "no findings"
    return f"{record.top_finding_severity}: {record.top_finding_title}"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())
