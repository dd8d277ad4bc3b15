"""service-down, the causes outside the process: a node, a dependency, the front door (probes).

Steps of ``notebooks/service-down.ipynb`` (re-exported by :mod:`workbooks.runbooks.service_down`),
each reading the :class:`~workbooks.runbooks.service_down_state.Outage` the status step built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd

from workbooks.core.findings import Finding, Severity, format_value
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.service_down_state import (
    SCRAPE_SLACK,
    THRESHOLDS,
    Outage,
    Target,
    host_of,
    minute,
    targets_of,
    together,
)

if TYPE_CHECKING:
    from workbooks.runbooks.service_down import Crashes


# --- a node (or a group of hosts) lost ------------------------------------------------------


def nodes(incident: Incident, pods: QueryResult, outage: Outage, crashes: Crashes) -> None:
    """Section 3.4: did part of the fleet go down together, all on one node?

    Crash-looping pods are left out: their process exits, their node is fine.
    """
    limits = THRESHOLDS.of(incident)
    fallen = [t for t in outage.down if host_of(t.name) not in crashes.pods]
    if not fallen:
        _no_node(incident, outage, "no target is down without restarting", pods.name)
        return
    node_of = _node_of(pods)
    if len(fallen) == len(outage.targets):
        steps.checked(incident, f"nodes: the whole fleet ({len(fallen)} targets) is down")
        incident.record(
            Finding(
                severity="info",
                title=f"Every target of {outage.service} is down, on "
                f"{_count_nodes(fallen, node_of)}: not one node; see the dependencies and "
                "changes",
                subject={"service": outage.service},
                metric=pods.name,
            )
        )
        return
    for node, group in _by_node(fallen, node_of).items():
        on_node = [t for t in outage.targets if node_of.get(host_of(t.name)) == node]
        if node and len(group) == len(on_node) and together(group, limits["together_seconds"]):
            incident.record(_node_finding(node, group, outage, metric=pods.name))
            return
    if together(fallen, limits["together_seconds"]):
        incident.record(_together_finding(fallen, outage, metric=pods.name))
        return
    _no_node(incident, outage, "the down targets went down at different times", pods.name)


def _no_node(incident: Incident, outage: Outage, why: str, metric: str) -> None:
    steps.checked(incident, f"nodes: {why}")
    incident.record(
        Finding(
            severity="info",
            title=f"Not a node or host: {why}",
            subject={"service": outage.service},
            metric=metric,
        )
    )


def _node_of(pods: QueryResult) -> dict[str, str]:
    if pods.empty or not {"pod", "node"} <= set(pods.current.columns):
        return {}
    frame = pods.current.sort_values("timestamp")
    return {str(k): str(v) for k, v in frame.groupby("pod")["node"].last().items()}


def _by_node(targets: Sequence[Target], node_of: dict[str, str]) -> dict[str, list[Target]]:
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(node_of.get(host_of(target.name), ""), []).append(target)
    return dict(sorted(groups.items(), key=lambda item: -len(item[1])))


def _count_nodes(targets: Sequence[Target], node_of: dict[str, str]) -> str:
    found = {node_of.get(host_of(t.name)) for t in targets} - {None}
    return f"{len(found)} {steps.plural('node', len(found))}" if found else "nodes unknown"


def _node_finding(node: str, group: list[Target], outage: Outage, *, metric: str) -> Finding:
    names = [t.name for t in group]
    return Finding(
        severity=outage.severity,
        title=f"Node {node} lost every pod of {outage.service} on it: {steps.join(names)} went "
        f"down together at {minute(group[0].went_down)} without restarting; the pods on other "
        "nodes stay up",
        subject={"node": node, "instance": names},
        metric=metric,
        observed=float(len(group)),
        unit="targets down",
        recommendation=f"kubectl describe node {node} (Ready? pressure?); cordon and drain it "
        f"(kubectl drain {node} --ignore-daemonsets --delete-emptydir-data) so its pods "
        "reschedule, or replace the node.",
        cause="instance",
    )


def _together_finding(group: list[Target], outage: Outage, *, metric: str) -> Finding:
    names = [t.name for t in group]
    others = len(outage.targets) - len(group)
    what = f"{steps.join(names)} went down together" if len(group) > 1 else f"{names[0]} went down"
    return Finding(
        severity=outage.severity,
        title=f"{what} at {minute(group[0].went_down)} and stays down without restarting; the "
        f"other {others} {steps.plural('target', others)} stay up",
        subject={"instance": names},
        metric=metric,
        observed=float(len(group)),
        unit="targets down",
        recommendation=f"Look at what {steps.join(names)} share (host, node, zone): the "
        "target's last scrape error in Prometheus > Status > Targets, then restart or replace it.",
        cause="instance",
    )


# --- a dependency down first ----------------------------------------------------------------


def dependency_names(incident: Incident, upstreams: QueryResult, service: str) -> list[str]:
    """The service's dependencies: the config's ``dependencies:`` list, else the upstreams it
    calls (``upstream_requests_total``)."""
    configured = list(incident.config.dependencies.get(service, []))
    if configured:
        steps.checked(incident, f"dependencies from the config: {steps.join(configured)}")
        return configured
    if upstreams.empty or "upstream" not in upstreams.current.columns:
        return []
    found = sorted({str(u) for u in upstreams.current["upstream"].dropna() if str(u)})
    steps.checked(incident, f"dependencies from the calls it makes: {steps.join(found)}")
    return found


def query_dependencies(
    incident: Incident, name: str, dependencies: list[str], *, promql: str | None = None
) -> QueryResult | None:
    """``incident.query(name, service=...)`` once per dependency, as one result; None (and a
    note) when none is known. ``promql`` replaces the query for every dependency."""
    if not dependencies:
        incident.record(
            Finding(
                severity="info",
                title="No dependency is known for this service: not checked",
                subject={"service": incident.service},
                recommendation="List them in the config: dependencies: {SERVICE: [db, store]}.",
            )
        )
        return None
    results = [incident.query(name, promql=promql, service=each) for each in dependencies]
    found = [r for r in results if not r.empty]
    combined = replace(results[0], title="dependencies: up (1) or down (0)")
    if found:
        combined.current = pd.concat([r.current for r in found], ignore_index=True)
        baselines = [r.baseline for r in found if r.baseline is not None and not r.baseline.empty]
        combined.baseline = pd.concat(baselines, ignore_index=True) if baselines else None
    return combined


def dependencies(incident: Incident, up: QueryResult | None, outage: Outage) -> None:
    """Section 3.5: did a dependency go down first (before the service's first target)?"""
    if up is None or up.empty:
        return
    limits = THRESHOLDS.of(incident)
    found = targets_of(up.current, by="service", limits=limits)
    down = [d for d in found if d.down_now or (d.went_down is not None and outage.ongoing)]
    incident.timeseries(up, by="service")
    if not down:
        steps.checked(incident, f"dependencies: all {len(found)} up")
        incident.record(
            Finding(
                severity="info",
                title=f"Every dependency is up: {steps.join([d.name for d in found])}",
                subject={"service": outage.service},
                metric=up.name,
            )
        )
        return
    onset = outage.onset
    lead = pd.Timedelta(minutes=limits["dependency_lead_minutes"])
    for dependency in sorted(
        down, key=lambda d: d.went_down or pd.Timestamp.max.tz_localize("UTC")
    ):
        first = (
            onset is not None
            and dependency.went_down is not None
            and onset - lead <= dependency.went_down <= onset + SCRAPE_SLACK
        )
        incident.record(_dependency_finding(dependency, outage, first=first, metric=up.name))
        steps.checked(
            incident,
            f"dependency {dependency.name}: down since {minute(dependency.went_down)}"
            + (" (first)" if first else " (not before the service)"),
        )


def _dependency_finding(dependency: Target, outage: Outage, *, first: bool, metric: str) -> Finding:
    state = "is still down" if dependency.down_now else "is up again"
    onset = outage.onset
    if not first:
        when = (
            f"after the service ({minute(onset)})"
            if onset is not None
            else "while the service is up"
        )
        return Finding(
            severity="info",
            title=f"Dependency {dependency.name} went down at {minute(dependency.went_down)}, "
            f"{when}; it {state}",
            subject={"dependency": dependency.name},
            metric=metric,
        )
    lead = (onset - dependency.went_down).total_seconds() / 60 if onset is not None else 0.0
    severity: Severity = outage.severity if dependency.down_now else "warning"
    return Finding(
        severity=severity if severity != "info" else "warning",
        title=f"Dependency {dependency.name} went down first, at {minute(dependency.went_down)}, "
        f"{max(lead, 0):.0f} min before the first target of {outage.service} "
        f"({minute(onset)}); it {state}",
        subject={"dependency": dependency.name},
        metric=metric,
        recommendation=f"Restore {dependency.name} first (its own runbook and on-call); then "
        f"restart {outage.service} if it does not recover by itself (kubectl rollout restart "
        f"deployment/{outage.service}).",
        cause="dependency",
    )


# --- the front door: external probes -------------------------------------------------------


def probes(
    incident: Incident,
    success: QueryResult,
    status: QueryResult,
    duration: QueryResult,
    cert_expiry: QueryResult,
    outage: Outage,
) -> None:
    """Section 3.6: a probe failing while the targets are up is the ingress, DNS or TLS."""
    if success.empty:
        return
    incident.timeseries(success, by="instance")
    incident.timeseries(duration, by="instance")
    if not outage.failing_probes:
        durations = _last(duration.current)
        listed = steps.join(
            [f"{p.name} ({_seconds(durations.get(p.name))})" for p in outage.probes]
        )
        steps.checked(incident, "probes: every probe succeeds")
        incident.record(
            Finding(
                severity="info",
                title=f"Every probe succeeds now: {listed}",
                subject={"service": outage.service},
                metric=success.name,
            )
        )
        return
    codes, expiries = _last(status.current), _max(cert_expiry.current)
    for probe in outage.failing_probes:
        reason = probe_reason(codes.get(probe.name), expiries.get(probe.name), probe.went_down)
        steps.checked(
            incident, f"probe {probe.name}: failing since {minute(probe.went_down)} ({reason})"
        )
        incident.record(_probe_finding(probe, reason, outage, metric=success.name))


def probe_reason(code: float | None, cert_expiry: float | None, since: pd.Timestamp | None) -> str:
    """Why a probe fails: ``certificate expired``, ``HTTP 503`` or no HTTP response. Pure."""
    slack = SCRAPE_SLACK.total_seconds()
    if cert_expiry is not None and since is not None and cert_expiry <= since.timestamp() + slack:
        return "certificate expired"
    if code is not None and code >= 400:
        return f"HTTP {code:.0f}"
    return "no HTTP response (DNS or connection)"


def _probe_finding(probe: Target, reason: str, outage: Outage, *, metric: str) -> Finding:
    since = minute(probe.went_down)
    if outage.down:
        return Finding(
            severity="warning",
            title=f"The probe of {probe.name} fails too since {since} ({reason}): the down "
            "targets explain it",
            subject={"instance": probe.name, "reason": reason},
            metric=metric,
        )
    return Finding(
        severity="critical",
        title=f"The probe of {probe.name} fails since {since} ({reason}) while every target of "
        f"{outage.service} is up: users cannot reach it through its front door",
        subject={"instance": probe.name, "reason": reason},
        metric=metric,
        recommendation=_probe_advice(probe.name, reason),
        cause="external",
    )


def _probe_advice(url: str, reason: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    if reason == "certificate expired":
        return (
            f"Renew the TLS certificate of {host} (cert-manager: kubectl describe certificate; "
            f"check with: openssl s_client -connect {host}:443 -servername {host.split(':')[0]}), "
            "then reload the ingress."
        )
    if reason.startswith("HTTP"):
        return (
            f"The targets are up, so look in front of them: curl -v {url}; kubectl describe "
            "ingress and the ingress controller's logs (a 503 there means no ready backend)."
        )
    return (
        f"Resolve and connect to {host} from outside (dig {host.split(':')[0]}; curl -v {url}): "
        "check the DNS record and the load balancer's address."
    )


def _last(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty or "instance" not in frame.columns:
        return {}
    ordered = frame.sort_values("timestamp")
    return {str(k): float(v) for k, v in ordered.groupby("instance")["value"].last().items()}


def _max(frame: pd.DataFrame) -> dict[str, float]:
    if frame.empty or "instance" not in frame.columns:
        return {}
    return {str(k): float(v) for k, v in frame.groupby("instance")["value"].max().items()}


def _seconds(value: float | None) -> str:
    return format_value(value, "seconds") if value is not None else "n/a"
