"""unauthorized-access: who fails to authenticate, since when, and is it an attack or a bug?

Cells of ``notebooks/unauthorized-access.ipynb`` call these steps in order; each records findings
on the incident. The causes it tells apart, each named in the top finding's subject:

* a **breach**: a success right after a burst of failures from the same client on the same
  route (``client_id``, ``route``), critical on an admin route;
* **credential stuffing**: the failures come from many clients never seen before (``reason``);
* **one revoked or leaked key hammering**: one client carries the rise (``client_id``);
* **a deploy that broke authentication**: every known client fails alike right after a build
  rolled out (``version``): not an attack, roll it back.

Client ids are data and appear in findings; tokens and keys never do (they are no labels). The
judgements are in :mod:`workbooks.runbooks.unauthorized_access_checks`; thresholds in
:data:`THRESHOLDS`, which a team overrides under ``runbooks: {unauthorized-access: {thresholds:
...}}``.
"""

from __future__ import annotations

import pandas as pd

from workbooks.core.findings import SEVERITIES, Finding, Severity
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks import unauthorized_access_checks as checks
from workbooks.runbooks import unauthorized_access_deploy as deploy
from workbooks.runbooks import unauthorized_access_findings as findings
from workbooks.runbooks.unauthorized_access_findings import RATE

THRESHOLDS = steps.Thresholds(
    "unauthorized-access",
    # Auth failures against their baseline: critical / warning from these ratios.
    failure_ratio_critical=3.0,
    failure_ratio_warning=1.5,
    # A client or reason "moved" at this ratio; a culprit stands this far above the next one.
    moved_ratio=2.0,
    stands_out_gap=2.0,
    # One client carries at least this share of the rise in failures.
    client_share_min=0.5,
    # Credential stuffing: at least this many clients never seen before fail, carrying at least
    # this share of the rise.
    new_clients_min=20,
    new_share_min=0.5,
    # A breach: a burst (peak at least burst_ratio x the pair's usual failures and at least
    # burst_min_per_second), then successes at success_ratio x their usual level.
    burst_ratio=5.0,
    burst_min_per_second=0.05,
    success_ratio=2.0,
    success_min_per_second=0.01,
    # A broken deploy: at least this share of the known clients fail moved_ratio x more.
    known_moved_share=0.66,
)
TOP = 10  # clients in topk breakdowns
QUIET = (
    "A quiet run: auth failures are within their baseline, no client or reason stands out, "
    "no client succeeded after a burst of failures and nothing was deployed that broke auth. "
    "The alert's threshold may be too tight for this service's everyday failures."
)


def _since(incident: Incident, onset: analysis.Onset | None) -> pd.Timestamp:
    return onset.at if onset is not None else pd.Timestamp(incident.starts_at)


def _at_least_symptom(incident: Incident, grade: Severity) -> Severity:
    """A cause that explains the rise in failures is as severe as the ongoing rise."""
    found = steps.trail(incident)
    if not found.ongoing or found.symptom is None:
        return grade
    return min(grade, found.symptom.severity, key=SEVERITIES.index)


def still_happening(incident: Incident, failures: QueryResult) -> None:
    """Section 2: auth failures over the last 10 minutes against their baseline."""
    steps.still_happening(
        incident,
        failures,
        severity=THRESHOLDS.of(incident).ladder("failure_ratio"),
        what="auth failures",
        unit=RATE,
    )


def triage(incident: Incident, failing: QueryResult, new: QueryResult) -> None:
    """Section 2: one client or many, and how many never seen before (the checklist's answers)."""
    now = _last(failing)
    before = _median(failing.baseline)
    strangers = _last(new)
    steps.checked(incident, f"clients failing now: {now:.0f} (a day earlier {before:.0f})")
    incident.markdown(
        f"- Clients failing authentication now: **{now:.0f}** (typically {before:.0f} over the "
        "same window a day earlier).\n- Of them never seen before (not in the same hour a day "
        f"earlier): **{strangers:.0f}**.\n- Whether a client succeeded after a burst of "
        "failures, and whether a deploy came just before: sections 3.2 and 3.4."
    )


def _last(result: QueryResult) -> float:
    if result.empty:
        return 0.0
    series = result.series()[0].dropna()
    return float(series.iloc[-1]) if len(series) else 0.0


def _median(frame: pd.DataFrame | None) -> float:
    if frame is None or frame.empty:
        return 0.0
    return float(frame["value"].astype(float).median())


def reasons(
    incident: Incident, failures: QueryResult, by_reason: QueryResult
) -> analysis.Onset | None:
    """Section 3.1: failures by reason over time (baseline dashed); when the rise began."""
    onset = None
    if not failures.empty:
        found = analysis.find_onset(failures.series()[0])
        onset = found if found is not None and found.direction == "up" else None
    incident.timeseries(by_reason, by="reason", onset=onset.at if onset else None)
    if not failures.empty:
        change = failures.compare(since=_since(incident, onset))
        numbers = steps.change_text(change.current, change.baseline, RATE)
        steps.checked(incident, f"auth failures: {steps.ratio_text(change.ratio)} ({numbers})")
    return onset


def _reason_of_rise(
    incident: Incident, by_reason: QueryResult, since: pd.Timestamp
) -> steps.Breakdown | None:
    """The reasons that carry the rise, in failures/s (a reason new since the baseline too)."""
    if by_reason.empty:
        return None
    limits = THRESHOLDS.of(incident)
    table = analysis.top_contributors(
        by_reason.current, by_reason.baseline, by="reason", since=since
    )
    return steps.classify(
        checks.absent_is_zero(table),
        by="reason",
        measure="delta",
        min_change=limits["burst_min_per_second"],
        gap=limits["stands_out_gap"],
    )


def success_after_failures(
    incident: Incident,
    failures: QueryResult,
    successes: QueryResult,
    onset: analysis.Onset | None,
) -> list[checks.Breach]:
    """Section 3.2: did a client succeed right after a burst of failures? (A possible breach.)"""
    limits = THRESHOLDS.of(incident)
    # A burst that ended before the alert fired still counts: look from 15 min before it on.
    since = min(_since(incident, onset), pd.Timestamp(incident.starts_at) - pd.Timedelta("15min"))
    found = checks.find_breaches(
        failures.current,
        successes.current,
        since=since,
        failures_baseline=failures.baseline,
        successes_baseline=successes.baseline,
        burst_ratio=limits["burst_ratio"],
        burst_min=limits["burst_min_per_second"],
        success_ratio=limits["success_ratio"],
        success_min=limits["success_min_per_second"],
    )
    if not found:
        steps.checked(incident, "success after a burst of failures: no client")
        incident.record(
            Finding(
                severity="info",
                title="No client succeeded after a burst of failures: where a client's failures "
                "burst, its successes stayed within their usual level",
                subject={"service": incident.service},
                metric=failures.name,
            )
        )
        return found
    for breach in found[:3]:
        _chart_breach(incident, breach, failures, successes)
        incident.record(findings.breach(breach, successes.name))
    return found


def _chart_breach(
    incident: Incident, breach: checks.Breach, failures: QueryResult, successes: QueryResult
) -> None:
    pair = {"client_id": breach.client_id, "route": breach.route}
    lines = []
    for result, outcome in ((failures, "failures"), (successes, "successes")):
        series = analysis.series_of(result.current, **pair)
        lines.append(pd.DataFrame({"timestamp": series.index, "value": series.to_numpy()}))
        lines[-1]["outcome"] = outcome
    incident.show(
        charts.timeseries(
            pd.concat(lines, ignore_index=True),
            by="outcome",
            title=incident.chart_title(
                f"Client {breach.client_id} on {breach.route}: failures, then successes"
            ),
            unit=RATE,
            alert_start=pd.Timestamp(incident.starts_at),
            onset=breach.burst_at,
        )
    )


def clients(
    incident: Incident,
    failures: QueryResult,
    by_client: QueryResult,
    new_clients: QueryResult,
    new_failures: QueryResult,
    by_reason: QueryResult,
    onset: analysis.Onset | None,
) -> checks.ClientShare | None:
    """Section 3.3: who carries the rise? Strangers (stuffing), one client, or everyone."""
    limits = THRESHOLDS.of(incident)
    since = _since(incident, onset)
    if failures.empty or by_client.empty:
        steps.checked(incident, "failures by client: no data")
        return None
    table = analysis.top_contributors(
        by_client.current, by_client.baseline, by="client_id", since=since
    )
    incident.timeseries(by_client, by="client_id", onset=since)
    # Failures/s above each client's own baseline: who carries the rise. A ratio would leave
    # every client never seen before without a bar ("no baseline"), stuffing included.
    rise = checks.absent_is_zero(table).sort_values("delta", ascending=False, kind="stable")
    incident.show(
        charts.ranked_bars(
            rise,
            label="client_id",
            value="delta",
            unit=RATE,
            title=incident.chart_title("Auth failures by client: rise above own baseline"),
            subtitle="failures/s since the onset minus the same span a day earlier (none: 0)",
        )
    )
    change = failures.compare(since=since)
    found = checks.client_share(table, increase=change.delta, moved_ratio=limits["moved_ratio"])
    grade = _at_least_symptom(incident, limits.severity(change.ratio, "failure_ratio"))
    if grade == "info":
        steps.checked(incident, f"failures by client: no rise to explain ({_numbers(change)})")
        return found
    reason = _reason_of_rise(incident, by_reason, since)
    strangers = _after(new_clients, since).max() if not new_clients.empty else 0.0
    stranger_rate = float(_after(new_failures, since).median()) if not new_failures.empty else 0.0
    carried = checks.share(stranger_rate, found.increase)
    if strangers >= limits["new_clients_min"] and carried >= limits["new_share_min"]:
        incident.record(
            findings.stuffing(grade, found, reason, strangers, stranger_rate, carried, change)
        )
    elif (
        found.top_client is not None
        and checks.share(found.top_delta, found.increase) >= limits["client_share_min"]
        and found.top_delta >= limits["stands_out_gap"] * max(found.next_delta, 0.0)
    ):
        explained = any(
            earlier.cause is not None and found.top_client in earlier.subject_values("client_id")
            for earlier in incident.findings
        )
        incident.record(
            findings.one_client(grade, found, reason, change, by_client.name, explained=explained)
        )
    else:
        steps.checked(
            incident,
            f"failures by client: neither one client nor new clients carry the rise (top "
            f"{found.top_client}, {checks.share(found.top_delta, found.increase):.0%}; "
            f"{strangers:.0f} new clients, {carried:.0%})",
        )
    return found


def _after(result: QueryResult, since: pd.Timestamp) -> pd.Series:
    series = result.series()[0].dropna()
    after = series[series.index >= since]
    return after if len(after) else pd.Series([0.0])


def _numbers(change: analysis.Comparison) -> str:
    return steps.change_text(change.current, change.baseline, RATE)


def what_changed(
    incident: Incident,
    builds: QueryResult,
    failures: QueryResult,
    successes: QueryResult,
    found: checks.ClientShare | None,
    onset: analysis.Onset | None,
) -> None:
    """Section 3.4: a deploy just before, and do the failures follow it (everyone alike)?"""
    limits = THRESHOLDS.of(incident)
    since = _since(incident, onset)
    change = failures.compare(since=since) if not failures.empty else None
    grade = limits.severity(change.ratio if change else None, "failure_ratio")
    deploy.what_changed(
        incident,
        builds,
        failures,
        successes,
        found,
        since=since,
        grade=_at_least_symptom(incident, grade) if grade != "info" else grade,
        share=limits["known_moved_share"],
    )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no step named a cause, and the steps that fit the findings."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Widen the window (`lookback='12h'`) and compare with a week ago (`baseline='7d'`).",
            "Break the failures down by route and by source address at the gateway.",
            "Check the identity provider and the signing keys for the same window.",
        ],
    )
