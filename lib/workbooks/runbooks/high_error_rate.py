"""high-error-rate: are requests still failing, which errors, since when, and which layer broke.

Cells of ``notebooks/high-error-rate.ipynb`` call these steps in order; each records findings.
The layers are looked at from the deepest up, so that the first cause named is the one that
explains the rest: what changed (a version on the instances that fail), the upstreams the
service calls, the models behind it (a modality or a model), and only then where the failures
show (a route, an instance). A culprit found in a higher layer after a cause was named is
recorded as following from it, not as a second cause: a failing upstream also makes the routes
that call it fail. Client errors (4xx, 429) are told apart from server errors (5xx), since only
server errors burn the availability SLO. Thresholds are declared in :data:`THRESHOLDS`; a team
overrides them under ``runbooks: {high-error-rate: {thresholds: ...}}``.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import high_error_rate_burn, steps
from workbooks.runbooks import high_error_rate_judge as judge
from workbooks.runbooks.high_error_rate_judge import QUIET, THRESHOLDS
from workbooks.runbooks.steps.recent import RECENT

# --- section 2 --------------------------------------------------------------------------------


def still_happening(incident: Incident, by_code: QueryResult) -> steps.Recent | None:
    """Section 2: the last 10 minutes of each error code against its own baseline."""
    return steps.still_happening(
        incident,
        by_code,
        by="code",
        severity=THRESHOLDS.of(incident).ladder("error_ratio"),
        what="error share",
        unit="ratio",
    )


def blast_radius(incident: Incident, by_instance: QueryResult, by_route: QueryResult) -> None:
    """Section 2: one instance or all, one route or all? An info finding with the counts."""
    limits = THRESHOLDS.of(incident)
    parts = []
    for result, label in ((by_instance, "instance"), (by_route, "route")):
        if result.empty or result.baseline is None or result.baseline.empty:
            continue
        table = analysis.top_contributors(
            result.current, result.baseline, by=label, since=pd.Timestamp(incident.starts_at)
        )
        moved = table[table["ratio"] >= limits["moved_ratio"]][label].astype(str).to_list()
        total = len(table)
        names = f" ({steps.join(moved)})" if moved and len(moved) < total else ""
        parts.append(f"{len(moved)} of {total} {steps.plural(label, total)}{names}")
    if not parts:
        return
    text = "; ".join(parts)
    steps.checked(incident, f"blast radius of the 5xx share since the alert: {text}")
    title = f"Blast radius: server errors rose on {text}"
    if all(part.startswith("0 of") for part in parts):
        title = "Blast radius: server errors did not rise on any instance or route"
    incident.record(
        Finding(
            severity="info",
            title=title,
            subject={"service": incident.service},
            metric=by_instance.name,
        )
    )


# --- 3.1 / 3.2: the errors over the window, server or client ---------------------------------


def overview(
    incident: Incident, errors: QueryResult, by_code: QueryResult
) -> analysis.Onset | None:
    """The 5xx share and each code's share against the baseline; when the errors began."""
    if errors.empty:
        return None
    onset = analysis.find_onset(errors.series()[0])
    onset = onset if onset is not None and onset.direction == "up" else None
    at = onset.at if onset else None
    incident.timeseries(errors, onset=at)
    if not by_code.empty:
        incident.timeseries(by_code, by="code", onset=at)
    _record_overall(incident, errors, onset)
    _burst(incident, errors)
    return onset


def _record_overall(incident: Incident, errors: QueryResult, onset: analysis.Onset | None) -> None:
    change = errors.compare(since=judge.since(incident, onset))
    severity = THRESHOLDS.of(incident).severity(change.ratio, "error_ratio")
    numbers = steps.change_text(change.current, change.baseline, "ratio")
    if severity == "info":
        title = (
            f"The service-wide 5xx share is {steps.ratio_text(change.ratio)} its baseline "
            f"({numbers}) since the alert: server errors are not what rose"
        )
    else:
        when = f" from {onset.at:%H:%M} UTC" if onset else " since the alert"
        title = (
            f"Server errors (5xx) rose {steps.ratio_text(change.ratio)} over their baseline "
            f"({numbers} of requests){when}"
        )
    steps.checked(incident, f"service-wide 5xx share: {steps.ratio_text(change.ratio)} ({numbers})")
    incident.record(
        Finding(
            severity=severity,
            title=title,
            subject={"service": incident.service},
            metric=errors.name,
            observed=change.current,
            baseline=change.baseline,
            unit="ratio",
        )
    )


def _burst(incident: Incident, errors: QueryResult) -> None:
    """A spike around the alert that is over now: said plainly, as info (it is not ongoing)."""
    current, baseline = errors.series()
    around = current[current.index >= pd.Timestamp(incident.starts_at) - pd.Timedelta("15min")]
    if around.empty or baseline.empty:
        return
    usual = float(baseline.median())
    recent = errors.compare(tail=pd.Timedelta(RECENT))
    limits = THRESHOLDS.of(incident)
    peaked = usual > 0 and float(around.max()) >= limits["error_ratio_critical"] * usual
    calm = limits.severity(recent.ratio, "error_ratio") == "info"
    if not (peaked and calm):
        return
    high = around[around >= limits["error_ratio_warning"] * usual]
    peak, normal = format_value(float(around.max()), "ratio"), format_value(usual, "ratio")
    numbers = f"{normal} → {peak}"
    back = steps.change_text(recent.current, recent.baseline, "ratio")
    steps.checked(
        incident,
        f"a burst of 5xx ({numbers}) from {high.index[0]:%H:%M} to "
        f"{high.index[-1]:%H:%M} UTC, over since",
    )
    incident.record(
        Finding(
            severity="info",
            title=f"A burst that is over: the 5xx share peaked at {peak} (baseline {normal}) "
            f"between {high.index[0]:%H:%M} and {high.index[-1]:%H:%M} UTC; the last 10 min: "
            f"{back}",
            subject={"service": incident.service},
            metric=errors.name,
            observed=float(around.max()),
            baseline=usual,
            unit="ratio",
        )
    )


def server_or_client(
    incident: Incident, by_code: QueryResult, errors: QueryResult, onset: analysis.Onset | None
) -> None:
    """Which codes rose: server errors (5xx), or clients refused (4xx, 429) while 5xx is normal."""
    found = judge.split(incident, by_code, "code", onset, "error share")
    if found is None or errors.empty:
        return
    server = errors.compare(since=judge.since(incident, onset))
    server_moved = (server.ratio or 0.0) >= THRESHOLDS.of(incident)["moved_ratio"]
    client = [code for code in found.moved if not code.startswith("5")]
    if client and not server_moved:
        _client_errors(incident, by_code, found, client)
        return
    rose = [code for code in found.moved if code.startswith("5")]
    if rose:
        rows = [found.row(code) for code in rose]
        numbers = "; ".join(
            f"{code}: {steps.change_text(float(r['current']), float(r['baseline']), 'ratio')}"
            for code, r in zip(rose, rows, strict=True)
        )
        incident.record(
            Finding(
                severity="info",
                title=f"Server errors: code {steps.join(rose)} rose ({numbers}). A 503 usually "
                "means a dependency failing or load being shed (3.5), a 500 a bug or a "
                "failing model call (3.4, 3.6)",
                subject={"code": rose},
                metric=by_code.name,
            )
        )


def _client_errors(
    incident: Incident, by_code: QueryResult, found: steps.Breakdown, client: list[str]
) -> None:
    rest = found.table[~found.table["code"].astype(str).isin(client)]["change"].dropna()
    narrowed = replace(
        found,
        culprits=tuple(client),
        change=float(found.table.set_index("code").loc[client, "change"].min()),
        others_change=float(rest.median()) if len(rest) else None,
    )
    limited = "429" in client
    judge.record_culprit(
        incident,
        by_code,
        narrowed,
        what="Not server errors: responses",
        cause="traffic" if limited else "external",
        recommendation=(
            "The service is healthy and refuses requests: find the client behind the "
            f"{steps.join(client)} responses (access logs by API key, client and user agent). "
            + (
                "For 429: contact the client's owner, or raise its quota if the load is "
                "legitimate. "
                if limited
                else "For 4xx: look for a client release or an API change that sends bad requests. "
            )
            + "Consider leaving client errors out of this alert's expression."
        ),
    )


def burn_rate(incident: Incident, results: dict[str, QueryResult]) -> high_error_rate_burn.Burn:
    """The error-budget burn rate over 5m/1h and 30m/6h against the SLO in the config."""
    limits = THRESHOLDS.of(incident)
    return high_error_rate_burn.burn_rate(
        incident, results, fast=limits["burn_rate_fast"], slow=limits["burn_rate_slow"]
    )


# --- 3.3 to 3.6: the layers, deepest first ----------------------------------------------------


def what_changed(
    incident: Incident,
    model_versions: QueryResult,
    builds: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Model and service versions near the onset, and whether the failures follow them."""
    limits = THRESHOLDS.of(incident)
    markers = [
        analysis.changes(result.current, label=label)
        for result, label in ((model_versions, "model_version"), (builds, "version"))
        if not result.empty
    ]
    marked = pd.concat(markers, ignore_index=True) if markers else None
    if not by_instance.empty:
        incident.timeseries(
            by_instance,
            by="instance",
            onset=onset.at if onset else None,
            markers=marked if marked is not None and len(marked) else None,
        )
    instances = judge.split(incident, by_instance, "instance", onset, "5xx share")
    for versions, label in ((model_versions, "model_version"), (builds, "version")):
        steps.correlate_rollouts(
            incident,
            versions,
            instances if instances is not None else {},
            onset=onset.at if onset is not None else None,
            severity=judge.grade(incident),
            label=label,
            min_change=limits["moved_ratio"],
            gap=limits["stands_out_gap"],
            what="the 5xx share",
            unit="ratio",
        )


def dependencies(incident: Incident, upstreams: QueryResult, onset: analysis.Onset | None) -> None:
    """The calls the service makes to its upstreams: does one fail more than it usually does?"""
    found = judge.split(incident, upstreams, "upstream", onset, "share of calls failing")
    if found is not None and found.culprits:
        judge.record_culprit(
            incident,
            upstreams,
            found,
            what="Errors",
            cause="dependency",
            recommendation="Check upstream {values}: {its} dashboard, status page and recent "
            "deploys, and page {its} owners. Meanwhile open {its} circuit breaker or serve a "
            "fallback so the service stops answering 503.",
        )


def models(
    incident: Incident,
    by_modality: QueryResult,
    by_model: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """The model calls behind the requests: one modality or one model failing?"""
    modality = judge.split(incident, by_modality, "modality", onset, "share of model calls failing")
    model = judge.split(incident, by_model, "model", onset, "share of model calls failing")
    named = [(r, f) for r, f in ((by_modality, modality), (by_model, model)) if f and f.culprits]
    if not named:
        return
    result, found = named[0]
    both = {f.by: list(f.culprits) for _, f in named}
    also = ""
    if len(named) == 2:
        model_change = steps.ratio_text(named[1][1].change)
        also = f"; model {steps.join(both['model'])}, which serves it, rose {model_change} with it"
    judge.record_culprit(
        incident,
        result,
        found,
        what="Failed model calls",
        suffix=also,
        cause="data" if found.by == "modality" else "dependency",
        recommendation="Read the model server's errors for {values}: a bad input type or "
        "preprocessing, or the model failing to load. Route {it} away from the failing model, "
        "or turn {it} off behind {its} flag, until the model is fixed.",
        subject=both,
    )


def where(
    incident: Incident,
    by_route: QueryResult,
    by_instance: QueryResult,
    onset: analysis.Onset | None,
) -> None:
    """Which routes and instances fail, each against its own baseline."""
    if not by_route.empty:
        incident.timeseries(by_route, by="route", onset=onset.at if onset else None)
    for result, label, cause, advice in (
        (
            by_route,
            "route",
            "config",
            "Read the 5xx logs of {values}: a recent change to {its} handler, {its} config or a "
            "feature flag? Roll the change back or turn {it} off behind {its} flag.",
        ),
        (
            by_instance,
            "instance",
            "instance",
            "Drain {values} (take {it} out of the load balancer) and replace {it}; compare {its} "
            "logs and host metrics with a healthy instance's.",
        ),
    ):
        found = judge.split(incident, result, label, onset, "5xx share")
        if found is not None and found.culprits:
            judge.record_culprit(
                incident,
                result,
                found,
                what="5xx share",
                cause=cause,
                recommendation=advice,
            )


def resolution(incident: Incident) -> None:
    """Section 4: the verdict if no cause was named, and the steps that fit what was found."""
    steps.conclude(
        incident,
        quiet=QUIET,
        next_steps=[
            "Read the service's error logs for the alert window: the exception types name the "
            "failing component.",
            "Widen the window (`lookback='6h'`) and compare with a week ago (`baseline='7d'`).",
            "Check dependencies this workbook does not see (database, queues, DNS, TLS "
            "certificates) and config changes without a version (feature flags).",
        ],
    )
