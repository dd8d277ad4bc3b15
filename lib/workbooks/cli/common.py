"""What the commands share: the session and its options, error handling, option types, printing.

``--config`` and ``--archive`` are accepted before the command and after it
(``workbook list --archive DIR``): :class:`WorkbookGroup` adds them to every command it holds,
and the nearest one typed wins.
"""

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
from typing import TYPE_CHECKING, Any, TypeVar

import click

from workbooks.core.durations import parse_duration
from workbooks.core.errors import (
    BadAlertError,
    ConfigError,
    RunNotFoundError,
    UnknownRunbookError,
    WorkbooksError,
)
from workbooks.core.findings import SEVERITY_ICONS, Finding, ranked

if TYPE_CHECKING:  # the archive and the config load pydantic: commands import them when they run
    from workbooks.archive.store import Archive, RunRecord
    from workbooks.core.config import Config

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT = (BadAlertError, ConfigError, UnknownRunbookError, RunNotFoundError)

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


@dataclass
class Session:
    """What the options before and after the command chose; commands ask it for the rest."""

    config_file: Path | None = None
    archive_dir: str | None = None  # a folder, or s3://bucket/prefix

    def config(self) -> Config:
        from workbooks.core.config import load_config

        config = load_config(self.config_file)
        if self.archive_dir is not None:
            config = config.model_copy(update={"archive": self.archive_dir})
        return config

    def archive(self, config: Config | None = None) -> Archive:
        from workbooks.archive.store import Archive

        return Archive.from_config(config or self.config())


def _use_config_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    ctx.ensure_object(Session).config_file = value
    # The kernel reads its config on its own, from another cwd: hand it the same file.
    ctx.with_resource(environment("WORKBOOKS_CONFIG", str(value.absolute())))


def _use_archive(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Session).archive_dir = value  # a folder, or a URL kept as given


def session_options() -> list[click.Option]:
    """``--config`` and ``--archive``, as every command and the group itself take them."""
    return [
        click.Option(
            ["--config", "config_file"],
            type=click.Path(dir_okay=False, path_type=Path),
            expose_value=False,
            callback=_use_config_file,
            help="YAML config file [default: $WORKBOOKS_CONFIG, else ./workbooks.yaml].",
        ),
        click.Option(
            ["--archive", "archive_dir"],
            type=click.Path(file_okay=False),
            expose_value=False,
            callback=_use_archive,
            help="Archive folder, or s3://bucket/prefix "
            "[default: $WORKBOOKS_ARCHIVE, else ./archive].",
        ),
    ]


def with_session_options(command: click.Command) -> click.Command:
    """``command`` (and, for a group, the commands it holds) taking the session options."""
    taken = {param.name for param in command.params}
    command.params.extend(option for option in session_options() if option.name not in taken)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_session_options(sub)
    return command


class WorkbookGroup(click.Group):
    """A group whose every command takes the session options, however it was added.

    Commands registered later (``main.add_command``, ``@main.command()``) get them too, so
    no command can forget ``workbook CMD --archive DIR``.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(with_session_options(cmd), name)


def handles_errors(command: F) -> F:
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
def environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def run_json(record: RunRecord, findings: Sequence[Finding] | None = None) -> dict[str, Any]:
    """A run as every ``--json`` prints it: the run record's keys, plus ``findings`` if given.

    ``list`` prints these without findings, ``show``, ``run``, ``replay`` and ``demo`` with
    them: the same names everywhere (``incident_id``, ``run_id``, ``runbook``, ``status``...).
    """
    document = record.model_dump(mode="json")
    if findings is not None:
        document["findings"] = [finding.to_dict() for finding in ranked(findings)]
    return document


def report_runs(records: Sequence[RunRecord], archive: Archive, *, as_json: bool) -> None:
    """What ran, where the artifact is, the top findings; exit 1 if a run failed."""
    if as_json:
        documents = [run_json(record, archive.findings(record)) for record in records]
        shown = documents[0] if len(documents) == 1 else documents
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        for number, record in enumerate(records):
            if number:
                click.echo()
            describe(record, archive.findings(record), limit=5)
    failed = [record for record in records if record.status == "failed"]
    for record in failed:
        message = (record.error or {}).get("message", "unknown error")
        click.echo(
            f"error: run {record.run_id} failed: {message}; archived all the same in {record.path}",
            err=True,
        )
    if failed:
        sys.exit(EXIT_RUN_FAILED)


def describe(record: RunRecord, findings: list[Finding], *, limit: int | None) -> None:
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
        click.echo(f"  {SEVERITY_ICONS[finding.severity]} {finding.severity}: {finding.title}")
        if limit is None:
            for extra in (
                finding.detail,
                finding.recommendation and f"next: {finding.recommendation}",
            ):
                if extra:
                    click.echo(f"      {extra}")
    if limit is not None and len(ordered) > limit:
        click.echo(f"  … and {len(ordered) - limit} more (workbook show {record.run_id})")


def top_finding(record: RunRecord) -> str:
    if record.status == "failed":
        return f"run failed: {(record.error or {}).get('kind', '?')}"
    if record.top_finding_title is None:
        return "no findings"
    return f"{record.top_finding_severity}: {record.top_finding_title}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())
