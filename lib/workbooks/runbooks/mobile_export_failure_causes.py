"""mobile-export-failure: the four causes it tells apart, one step each (sections 3.2 to 3.5).

* :func:`unsupported_ops`: a version brings an op one target cannot convert (cause rollout),
  named only when the other targets export that version as usual;
* :func:`size_budget`: an artifact over its target's budget (cause limit), with by how much;
* :func:`toolchains`: a toolchain upgrade on a target after which EVERY version exported there
  fails (cause config): then the model version is not the cause;
* :func:`parity`: the parity error of a target and version above the tolerance (cause data).

A cause is at least as severe as the ongoing symptom it explains
(:func:`workbooks.runbooks.steps.as_severe_as_symptom`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbooks.core.findings import Finding, format_value
from workbooks.notebook import analysis, charts
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.mobile_export_failure_data import THRESHOLDS, Failing, levels


def _chart(
    incident: Incident,
    result: QueryResult,
    by: list[str],
    *,
    title: str | None = None,
    **options: Any,
) -> None:
    if result.empty:
        incident.timeseries(result)
        return
    incident.show(
        charts.timeseries(
            result.current,
            baseline=result.baseline,
            by=by,
            title=incident.chart_title(title or result.title),
            unit=result.unit,
            alert_start=pd.Timestamp(incident.starts_at),
            **options,
        )
    )


def _typical(shares: pd.DataFrame) -> dict[str, float]:
    """Each target's usual failure share: a day earlier, else its versions' current median."""
    typical = {}
    for target, rows in shares.groupby("target"):
        before = rows["baseline"].dropna()
        typical[str(target)] = float(before.median() if len(before) else rows["current"].median())
    return typical


# --- 3.2 a new op ----------------------------------------------------------------------------


def unsupported_ops(
    incident: Incident, ops: QueryResult, by_version: QueryResult, failing: Failing | None
) -> None:
    """Ops a target could not convert that were not hit a day earlier, per version and target."""
    _chart(incident, ops, ["model_version", "target", "op"], onset=_at(failing))
    if ops.empty or by_version.empty or failing is None:
        return
    table = levels(ops, ["model_version", "target", "op"], since=failing.since)
    new = table[(table["current"] > 0) & (table["baseline"].fillna(0.0) <= 0)]
    if new.empty:
        steps.checked(incident, "unsupported ops: none newly hit")
        return
    shares = levels(by_version, ["target", "model_version"], since=failing.since)
    for (version, target), rows in new.groupby(["model_version", "target"]):
        _record_op(incident, shares, str(version), str(target), sorted(rows["op"]), failing)


def _record_op(
    incident: Incident,
    shares: pd.DataFrame,
    version: str,
    target: str,
    ops: list[str],
    failing: Failing,
) -> None:
    limits = THRESHOLDS.of(incident)
    typical = _typical(shares)
    same = shares[shares["model_version"] == version].set_index("target")["current"]
    rise = float(same.get(target, float("nan"))) - typical.get(target, 0.0)
    others = {t: float(v) - typical.get(str(t), 0.0) for t, v in same.items() if t != target}
    broken = sorted(t for t, r in others.items() if r >= limits["failure_rise_warning"])
    fine = sorted(t for t in others if t not in broken)
    op_text = steps.join(ops)
    elsewhere = (f"; {steps.join(fine)} export {version} as usual" if fine else "") + (
        f"; it also fails on {steps.join(broken)}" if broken else ""
    )
    steps.checked(incident, f"unsupported ops: {version} on {target} hits {op_text}")
    subject = {"model_version": version, "target": target, "op": ops if len(ops) > 1 else ops[0]}
    severity = steps.as_severe_as_symptom(incident, limits.severity(rise, "failure_rise"), subject)
    incident.record(
        Finding(
            severity=severity,
            title=f"Model version {version} uses {op_text}, which {target} cannot convert: "
            f"{format_value(same.get(target, float('nan')), 'ratio')} of its {target} exports "
            f"fail since {failing.since:%H:%M} UTC (usually "
            f"{format_value(typical.get(target, float('nan')), 'ratio')}){elsewhere}",
            subject=subject,
            metric="mobile_export_failure_unsupported_ops",
            observed=float(same.get(target, float("nan"))),
            baseline=typical.get(target),
            unit="ratio",
            cause="rollout",
            recommendation=f"Add {op_text} to {target}'s delegate/fallback list (or register a "
            f"custom lowering) in the export config, or decompose it in {version} before export; "
            f"until then release {version} without the {target} artifact and keep the previous "
            "version on those devices.",
        )
    )


# --- 3.3 size budget -------------------------------------------------------------------------


def size_budget(
    incident: Incident, sizes: QueryResult, budgets: QueryResult, failing: Failing | None
) -> None:
    """Each artifact's size as a share of its target's budget; over it, the export fails."""
    share = _budget_share(sizes, budgets)
    if share is None:
        _chart(incident, sizes, ["target", "model_version"])
        return
    incident.show(
        charts.timeseries(
            share,
            by=["target", "model_version"],
            title=incident.chart_title("Artifact size as a share of the target's budget"),
            unit="ratio",
            alert_start=pd.Timestamp(incident.starts_at),
            onset=_at(failing),
            limit=1.0,
            limit_label="budget",
        )
    )
    since = failing.since if failing is not None else pd.Timestamp(incident.window.start)
    table = levels(sizes, ["target", "model_version"], since=since)
    budget = levels(budgets, ["target"], since=since).set_index("target")["last"]
    table["budget"] = table["target"].map(budget)
    table["share"] = table["last"] / table["budget"]
    table = table.dropna(subset=["share"]).sort_values("share", ascending=False)
    if table.empty:
        return
    top = table.iloc[0]
    steps.checked(
        incident,
        f"artifact sizes: highest {top['target']} {top['model_version']} at "
        f"{format_value(float(top['share']), 'ratio')} of its budget",
    )
    limits = THRESHOLDS.of(incident)
    for _, row in table[table["share"] >= limits["budget_share_warning"]].iterrows():
        _record_size(incident, row, table)


def _budget_share(sizes: QueryResult, budgets: QueryResult) -> pd.DataFrame | None:
    if sizes.empty or budgets.empty:
        return None
    budget = budgets.current[["timestamp", "target", "value"]].rename(columns={"value": "budget"})
    merged = sizes.current.merge(budget, on=["timestamp", "target"], how="inner")
    if merged.empty:
        return None
    merged["value"] = merged["value"] / merged["budget"]
    return merged.drop(columns="budget")


def _record_size(incident: Incident, row: pd.Series, table: pd.DataFrame) -> None:
    """One artifact at or over the warning share of its budget: close to it, or over it."""
    target, version = str(row["target"]), str(row["model_version"])
    size, budget, share = float(row["last"]), float(row["budget"]), float(row["share"])
    over = size - budget
    others = table[(table["target"] == target) & (table["model_version"] != version)]
    smallest = others.loc[others["last"].idxmin()] if len(others) else None
    grew = (
        f"; {smallest['model_version']}'s was {format_value(float(smallest['last']), 'bytes')}"
        if smallest is not None
        else ""
    )
    limits = THRESHOLDS.of(incident)
    severity = limits.severity(share, "budget_share")
    if severity != "critical":
        incident.record(
            Finding(
                severity="warning",
                title=f"{target}'s {version} artifact is close to its budget: "
                f"{format_value(size, 'bytes')} of {format_value(budget, 'bytes')} "
                f"({format_value(share, 'ratio')})",
                subject={"target": target, "model_version": version},
                metric="mobile_export_failure_artifact_bytes",
                observed=size,
                baseline=budget,
                unit="bytes",
            )
        )
        return
    subject = {"target": target, "reason": "size_budget", "model_version": version}
    incident.record(
        Finding(
            severity=severity,
            title=f"Model version {version}'s {target} artifact is {format_value(size, 'bytes')}, "
            f"{format_value(share - 1, 'ratio')} ({format_value(over, 'bytes')}) over {target}'s "
            f"{format_value(budget, 'bytes')} budget: the pipeline rejects it (size_budget)" + grew,
            subject=subject,
            metric="mobile_export_failure_artifact_bytes",
            observed=size,
            baseline=budget,
            unit="bytes",
            cause="limit",
            recommendation=f"Shrink {version} for {target} by at least "
            f"{format_value(over, 'bytes')}: re-quantize (int8 weights; palettize for Core ML), "
            "prune, or move a large embedding out of the bundle; raise the budget in the "
            f"pipeline config only if the app can ship {format_value(size, 'bytes')}.",
        )
    )


# --- 3.4 toolchain upgrade ------------------------------------------------------------------


def toolchains(
    incident: Incident, info: QueryResult, by_version: QueryResult, failing: Failing | None
) -> None:
    """Toolchain changes per target, and whether every version exported there broke after one."""
    markers = None
    if not info.empty:
        markers = analysis.changes(info.current, label="toolchain_version", by="target")
    _chart(
        incident,
        by_version,
        ["target", "model_version"],
        title="Failing export runs by target and version, toolchain changes marked",
        onset=_at(failing),
        markers=markers if markers is not None and len(markers) else None,
    )
    if markers is None or markers.empty:
        in_use = (
            steps.join(
                sorted(
                    f"{row.target} {row.toolchain} {row.toolchain_version}"
                    for row in info.current.drop_duplicates(
                        ["target", "toolchain_version"]
                    ).itertuples()
                )
            )
            if not info.empty
            else "not reported"
        )
        steps.checked(incident, f"toolchains: no change in the window ({in_use})")
        return
    for _, change in markers.iterrows():
        _judge_toolchain(incident, info, by_version, change, failing)


def _judge_toolchain(
    incident: Incident,
    info: QueryResult,
    by_version: QueryResult,
    change: pd.Series,
    failing: Failing | None,
) -> None:
    """One toolchain change (a row of analysis.changes): the cause if every version broke."""
    limits = THRESHOLDS.of(incident)
    target, at = str(change["target"]), pd.Timestamp(change["timestamp"])
    old, new = str(change["from"]), str(change["to"])
    toolchain = _toolchain_name(info, target, new)
    lead = pd.Timedelta(minutes=limits["toolchain_lead_minutes"])
    start = pd.Timestamp(incident.window.start)
    before = levels(by_version, ["target", "model_version"], since=start, until=at)
    after = levels(by_version, ["target", "model_version"], since=at, until=at + lead)
    here = after[after["target"] == target].set_index("model_version")["current"]
    usual = before[before["target"] == target].set_index("model_version")["current"]
    fallback = float(usual.median()) if len(usual) else 0.0
    rises = {str(v): float(share) - float(usual.get(v, fallback)) for v, share in here.items()}
    broken = sorted(v for v, rise in rises.items() if rise >= limits["failure_rise_warning"])
    what = f"{toolchain} {old} → {new} on {target} at {at:%H:%M} UTC"
    steps.checked(incident, f"toolchain {what}: {len(broken)} of {len(rises)} versions broke")
    every = bool(broken) and len(broken) == len(rises)
    if not every or len(broken) < min(limits["toolchain_versions_broken"], len(rises)):
        incident.record(
            Finding(
                severity="info",
                title=f"Toolchain changed ({what}), but the failures do not follow it: "
                + (
                    f"only {steps.join(broken)} broke there" if broken else "exports there are fine"
                ),
                subject={"target": target, "toolchain_version": new},
                metric="mobile_export_failure_toolchains",
            )
        )
        return
    subject = {"target": target, "toolchain": toolchain, "toolchain_version": new}
    worst = max(rises[v] for v in broken)
    incident.record(
        Finding(
            severity=steps.as_severe_as_symptom(
                incident, limits.severity(worst, "failure_rise"), subject
            ),
            title=f"The toolchain upgrade {what} broke every model version exported there "
            f"({steps.join(broken)}, up to {steps.points_text(worst)} of runs failing): the "
            "toolchain, not a model version, is the cause",
            subject=subject,
            metric="mobile_export_failure_toolchains",
            observed=worst,
            unit="ratio",
            detail=_releases_ruled_out(failing, broken, target),
            cause="config",
            recommendation=f"Pin {toolchain} back to {old} in the {target} export image "
            f"(e.g. `pip install '{toolchain}=={old}'`) and re-run the failed exports; report "
            f"the regression to {toolchain}, and upgrade again behind a canary export of every "
            "model.",
        )
    )


def _releases_ruled_out(failing: Failing | None, broken: list[str], target: str) -> str:
    """A model version released in the window breaks on the target as the older ones do."""
    released = [v for v in (failing.new_versions if failing else ()) if v in broken]
    if not released:
        return ""
    return (
        f"{steps.join(released)} {'was' if len(released) == 1 else 'were'} released in this "
        f"window too, but fail{'s' if len(released) == 1 else ''} on {target} as the older "
        "versions do since the upgrade: not the cause."
    )


def _toolchain_name(info: QueryResult, target: str, version: str) -> str:
    rows = info.current
    rows = rows[(rows["target"] == target) & (rows["toolchain_version"] == version)]
    return str(rows["toolchain"].iloc[0]) if len(rows) and "toolchain" in rows else "toolchain"


# --- 3.5 parity --------------------------------------------------------------------------------


def parity(incident: Incident, errors: QueryResult, failing: Failing | None) -> None:
    """Parity error per target and version against the tolerance (parity_error_warning)."""
    limits = THRESHOLDS.of(incident)
    tolerance = limits["parity_error_warning"]
    _chart(
        incident,
        errors,
        ["target", "model_version"],
        onset=_at(failing),
        limit=tolerance,
        limit_label="tolerance",
    )
    if errors.empty:
        return
    since = failing.since if failing is not None else pd.Timestamp(incident.window.start)
    table = levels(errors, ["target", "model_version"], since=since)
    table = table.sort_values("last", ascending=False, kind="stable")
    top = table.iloc[0]
    steps.checked(
        incident,
        f"parity: highest {top['target']} {top['model_version']} at {float(top['last']):.3g} "
        f"(tolerance {tolerance:g})",
    )
    for row in table[table["last"] >= tolerance].itertuples():
        subject = {"target": str(row.target), "model_version": str(row.model_version)}
        was = (
            f"{float(row.baseline):.2g} a day earlier"
            if pd.notna(row.baseline)
            else "no value a day earlier"
        )
        incident.record(
            Finding(
                severity=steps.as_severe_as_symptom(
                    incident, limits.severity(float(row.last), "parity_error"), subject
                ),
                title=f"Parity of {row.target} {row.model_version} drifted above tolerance: "
                f"largest error {float(row.last):.3g} against {tolerance:g} allowed ({was}); "
                "the pipeline rejects these exports (parity_mismatch)",
                subject=subject,
                metric="mobile_export_failure_parity",
                observed=float(row.last),
                baseline=float(row.baseline) if pd.notna(row.baseline) else None,
                cause="data",
                recommendation=f"Hold {row.target} artifacts of {row.model_version}; diff the "
                "export config and calibration data of the last good run with the current one, "
                "re-run the parity check on the reference inputs, and re-export with the previous "
                "calibration set (or an fp16 fallback for the drifting layers).",
            )
        )


def _at(failing: Failing | None) -> pd.Timestamp | None:
    return failing.onset if failing is not None else None
