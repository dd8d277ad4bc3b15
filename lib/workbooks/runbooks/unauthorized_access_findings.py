"""unauthorized-access: the findings that name a cause, worded for the person paged.

Built by the steps in :mod:`workbooks.runbooks.unauthorized_access` from the judgements of
:mod:`workbooks.runbooks.unauthorized_access_checks`. Client ids are data and appear in titles;
tokens and keys never reach this module (they are no labels).
"""

from __future__ import annotations

from workbooks.core.findings import Finding, Severity, format_value
from workbooks.notebook import analysis
from workbooks.runbooks import steps
from workbooks.runbooks.unauthorized_access_checks import Breach, ClientShare, share

RATE = "/s"  # the unit of every rate this runbook shows: failures or successes per second


def _numbers(change: analysis.Comparison) -> str:
    return steps.change_text(change.current, change.baseline, RATE)


def breach(found: Breach, metric: str) -> Finding:
    """A possible breach: critical on an admin route; revoke the key, review what it did."""
    where = f"admin route {found.route}" if found.admin else f"route {found.route}"
    rate = RATE
    title = (
        f"Possible breach: client {found.client_id} succeeded on {where} right after a burst "
        f"of failures (peak {format_value(found.burst_peak, rate)} at {found.burst_at:%H:%M} "
        f"UTC, usually {format_value(found.failures_normal, rate)}); its successes there from "
        f"{found.success_at:%H:%M} UTC reach {format_value(found.success_level, rate)}, "
        f"{steps.ratio_text(_ratio(found.success_level, found.success_normal))} their usual "
        f"{format_value(found.success_normal, rate)} "
        f"({format_value(found.success_recent, rate)} at the end of the window)"
    )
    return Finding(
        severity="critical" if found.admin else "warning",
        title=title,
        detail="Someone tried credentials for this client until one worked, and is now using it.",
        subject={"client_id": found.client_id, "route": found.route},
        metric=metric,
        observed=found.success_level,
        baseline=found.success_normal,
        unit=rate,
        recommendation=(
            f"Revoke every key of client {found.client_id} now and issue its owner a new one; "
            f"review what it did on {found.route} since {found.burst_at:%H:%M} UTC (the "
            "service's audit log: keys created, permissions changed, data read) and undo it; find "
            "where the failed attempts came from (source addresses at the gateway) and block them."
        ),
        cause="security",
    )


def _ratio(current: float, baseline: float) -> float | None:
    return current / baseline if baseline > 0 else None


def reasons_text(reason: steps.Breakdown | None) -> tuple[list[str], str]:
    """The reasons that carry the rise (or the largest one), as a list and in words."""
    if reason is None or reason.table.empty:
        return [], "no reason stands out"
    named = list(reason.culprits) or [str(reason.table.iloc[0]["reason"])]
    return named, steps.join(named)


def stuffing(
    grade: Severity,
    found: ClientShare,
    reason: steps.Breakdown | None,
    strangers: float,
    rate: float,
    carried: float,
    change: analysis.Comparison,
) -> Finding:
    """Credential stuffing: strangers carry the rise; subject: the reasons they fail with."""
    named, text = reasons_text(reason)
    return Finding(
        severity=grade,
        title=(
            f"Credential stuffing: {strangers:.0f} clients never seen before fail authentication "
            f"({text}); they carry {format_value(rate, RATE)} of the "
            f"{format_value(found.increase, RATE)} rise ({carried:.0%}), no single client "
            f"stands out (auth failures {_numbers(change)})"
        ),
        subject={"reason": named} if named else {},
        metric="unauthorized_access_new_client_failures",
        observed=change.current,
        baseline=change.baseline,
        unit=RATE,
        recommendation=(
            f"Throttle or block, at the gateway or WAF, the sources of requests failing with "
            f"{text} from clients never seen before (by source address, ASN or client "
            "fingerprint); add a challenge or stricter rate limit on the token checks; watch "
            "section 3.2 for any of them succeeding."
        ),
        cause="security",
    )


def one_client(
    grade: Severity,
    found: ClientShare,
    reason: steps.Breakdown | None,
    change: analysis.Comparison,
    metric: str,
    *,
    explained: bool,
) -> Finding:
    """One client carries the rise: a revoked or leaked key hammering (subject: client_id).

    ``explained``: an earlier cause (a breach) names this client already, so this one is its
    symptom, not a second cause.
    """
    client = str(found.top_client)
    named, text = reasons_text(reason)
    now, before = found.top_current, found.top_baseline
    title = (
        f"Client {client} is hammering with failing credentials ({text}): "
        f"{format_value(now, RATE)} failures, "
        f"{format_value(before, RATE)} in the baseline; it carries "
        f"{share(found.top_delta, found.increase):.0%} of the rise (auth failures "
        f"{_numbers(change)})"
    )
    if "revoked_key" in named:
        advice = (
            f"The key of client {client} is revoked and still in use: block {client} at the "
            "gateway, and ask its owner whether they revoked it (then their deployment still "
            "carries it) or not (then it leaked: keep it revoked and find where the calls come "
            "from)."
        )
    else:
        advice = (
            f"Rate-limit client {client} at the gateway and contact its owner; if its key may "
            "have leaked, revoke it and issue a new one."
        )
    return Finding(
        severity="warning" if explained else grade,
        title=title + (" (explained by the cause above)" if explained else ""),
        subject={"client_id": client},
        metric=metric,
        observed=now,
        baseline=before,
        unit=RATE,
        recommendation=advice,
        cause=None if explained else "security",
    )
