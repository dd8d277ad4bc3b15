"""Does a runbook find what its scenarios planted? Run the workbook on each case and judge.

`check_runbook` starts one real Prometheus holding the runbook's cases (each under its own
service), runs the workbook on each case's alert through the runner, as ``workbook run`` does,
with "now" pinned to the end of the case, and says per case whether the top finding named the
planted cause. `run_case` does one case against any source (a Prometheus URL or a recorded
evidence folder); `judge` is the verdict the end-to-end tests use too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbooks.archive.store import Archive, RunRecord
from workbooks.core.alert import parse_alert_group
from workbooks.core.config import Config, load_config
from workbooks.core.errors import SourceUnavailableError, UnknownRunbookError
from workbooks.running.runner import run_alert
from workbooks.running.warm import KernelPool
from workbooks.synthetic.lab import prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import Case, runbook

QUIET_TITLE = "A quiet run"


@dataclass(frozen=True, kw_only=True)
class CaseResult:
    """How one case went: what was planted and expected, what the top finding said."""

    id: str
    runbook: str
    cause: str
    expected: dict[str, Any]  # {} for a quiet control
    passed: bool
    reason: str  # why it failed, or "" when it passed
    top_title: str
    top_subject: dict[str, Any]
    top_severity: str | None
    status: str  # the run's status: succeeded or failed
    seconds: float
    run_path: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def expectation(self) -> str:
        """What the case expected, in words."""
        if not self.expected:
            return "a quiet run"
        return ", ".join(f"{k}={_words(v)}" for k, v in self.expected.items())


def names(subject: Mapping[str, Any], expect: Mapping[str, Any]) -> bool:
    """Whether `subject` names every expected label value.

    A subject value may be a string, a comma-separated string ("api-1, api-3") or a list; an
    expected value may be a string or a tuple (all of which must be named).
    """
    for label, wanted in expect.items():
        named = _values(subject.get(label))
        if not set(_values(wanted)) <= set(named):
            return False
    return True


def judge(case: Case, findings: Sequence[Mapping[str, Any]]) -> str:
    """Why `findings` (ranked, as in findings.json) miss `case`, or "" when they get it."""
    if not findings:
        return "the run recorded no findings"
    top = findings[0]
    if not case.expect:
        critical = [f["title"] for f in findings if f["severity"] == "critical"]
        if critical:
            return f"a quiet control gave critical findings: {critical}"
        if not top["title"].startswith(QUIET_TITLE):
            return f"a quiet control's top finding is {top['title']!r}, not {QUIET_TITLE!r}..."
        return ""
    if not names(top.get("subject") or {}, case.expect):
        return f"the top finding is about {top.get('subject')}, not {_words(case.expect)}"
    if top["severity"] not in ("critical", "warning"):
        return f"the top finding is only {top['severity']}"
    for finding in findings:
        is_cause = finding.get("likely_cause") or finding.get("cause")
        if is_cause and case.not_named and _names_any(finding.get("subject") or {}, case.not_named):
            return f"a likely-cause finding blames {case.not_named}: {finding['title']!r}"
    return ""


def select_cases(runbook_id: str, scenario: str | None = None) -> list[Case]:
    """The runbook's cases, or those whose id or cause is `scenario`.

    UnknownRunbookError names the known runbooks, or the known cases and causes.
    """
    cases = list(runbook(runbook_id).cases)
    if scenario is None:
        return cases
    chosen = [case for case in cases if scenario in (case.id, case.cause)]
    if not chosen:
        known = ", ".join(sorted({c.id for c in cases} | {c.cause for c in cases}))
        raise UnknownRunbookError(
            f"runbook {runbook_id} has no scenario {scenario!r}; known cases and causes: {known}"
        )
    return chosen


def run_case(
    case: Case,
    *,
    source: str,
    archive: Archive,
    config: Config,
    kernels: KernelPool | None = None,
) -> CaseResult:
    """Run the workbook on `case`'s alert against `source` and judge its findings.

    ``kernels`` gives the run a warm kernel (see :func:`case_kernels`); without it the run
    starts its own.
    """
    started = time.monotonic()
    scenario = case.scenario
    group = parse_alert_group(scenario.alert_payload())
    with pinned_now(scenario.end.isoformat()):
        (record,) = run_alert(
            group,
            config=config,
            archive=archive,
            source=source,
            kernels=kernels,
            runbook_id=case.runbook,
        )
    findings = archive.show(record.run_id)["findings"]
    reason = judge(case, findings) if record.status == "succeeded" else _failure(record)
    top = findings[0] if findings else {}
    return CaseResult(
        id=case.id,
        runbook=case.runbook,
        cause=case.cause,
        expected=dict(case.expect),
        passed=not reason,
        reason=reason,
        top_title=top.get("title", ""),
        top_subject=dict(top.get("subject") or {}),
        top_severity=top.get("severity"),
        status=record.status,
        seconds=round(time.monotonic() - started, 2),
        run_path=str(record.path) if record.path else None,
    )


def check_runbook(runbook: str, *, scenario: str | None = None, workdir: Path) -> list[CaseResult]:
    """Run `runbook`'s cases (or one, by id or cause) against one real Prometheus.

    Needs the prometheus and promtool binaries; the Prometheus data, its log and the archive of
    the runs stay in `workdir`.
    """
    cases = select_cases(runbook, scenario)
    if not prometheus_available():
        raise SourceUnavailableError(
            "workbook test needs the prometheus and promtool binaries on PATH "
            "(Debian: apt-get install prometheus)"
        )
    workdir = Path(workdir)
    config = load_config().model_copy(update={"archive": str(workdir / "archive")})
    archive = Archive(config.archive_dir)
    with case_kernels(cases) as kernels:
        server = start_prometheus([case.scenario for case in cases], workdir / "prometheus")
        try:
            return [
                run_case(case, source=server.url, archive=archive, config=config, kernels=kernels)
                for case in cases
            ]
        finally:
            server.stop()


def case_kernels(cases: Sequence[Case]) -> KernelPool:
    """Warm kernels for running ``cases`` one after another: one ready, the next starting.

    Each case still gets a kernel of its own, but it was started while the case before ran
    (or while Prometheus loaded the cases), on the core that run left idle.
    """
    return KernelPool(1, runs=len(cases))


@contextmanager
def pinned_now(moment: str) -> Iterator[None]:
    """WORKBOOKS_NOW for the kernels started meanwhile (they inherit our environment)."""
    previous = os.environ.get("WORKBOOKS_NOW")
    os.environ["WORKBOOKS_NOW"] = moment
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("WORKBOOKS_NOW", None)
        else:
            os.environ["WORKBOOKS_NOW"] = previous


def _failure(record: RunRecord) -> str:
    return f"the run failed: {(record.error or {}).get('message', 'unknown error')}"


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [part.strip() for part in str(value).split(",")]


def _names_any(subject: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return any(set(_values(v)) & set(_values(subject.get(k))) for k, v in labels.items())


def _words(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_words(v)}" for k, v in value.items())
    return "+".join(value) if isinstance(value, (list, tuple)) else str(value)


def results_json(results: Sequence[CaseResult]) -> str:
    return json.dumps([result.to_dict() for result in results], indent=2, ensure_ascii=False)
