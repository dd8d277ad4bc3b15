"""high-cpu: what the alert is about, a service or a host, and which instances run where.

A service alert (HighCpuUsage, CPUThrottlingHigh) carries `service`; a host alert
(HostHighCpuLoad, NodeCPUHigh) carries only `instance`, the node_exporter target. The queries of
``high-cpu.yaml`` read regular-expression matchers instead of the labels themselves, so one
notebook serves both: :func:`alert_scope` turns the alert's labels into them, and :func:`scope`
completes them with the placement (the service's instances and the nodes they run on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from workbooks.core.findings import Finding
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps

# Matches nothing a query selects (no target has an empty instance or node label).
NOTHING = ""
ANY = ".+"
# rate() windows: 5 minutes on the usual lookback, shorter when the whole look is minutes long.
LONGEST_WINDOW = timedelta(minutes=5)
SHORTEST_WINDOW = timedelta(seconds=10)


def matcher(values: tuple[str, ...] | None) -> str:
    """A regular expression matching exactly ``values``; None matches any value."""
    if values is None:
        return ANY
    return "|".join(re.escape(value) for value in values) if values else NOTHING


def rate_window(lookback: timedelta) -> str:
    """The rate() window for a look of ``lookback``: a twelfth of it, 10 s to 5 min."""
    window = min(LONGEST_WINDOW, max(SHORTEST_WINDOW, lookback / 12))
    return f"{int(window.total_seconds())}s"


@dataclass(frozen=True)
class Scope:
    """What the queries select. None means "any" (before the placement is known)."""

    host_alert: bool
    services: tuple[str, ...] | None
    instances: tuple[str, ...] | None
    nodes: tuple[str, ...] | None
    window: str

    @property
    def values(self) -> dict[str, str]:
        """The placeholders of the high-cpu queries: ``incident.query(name, **scope.values)``."""
        return {
            "services": matcher(self.services),
            "instances": matcher(self.instances),
            "nodes": matcher(self.nodes),
            "window": self.window,
        }


def alert_scope(incident: Incident) -> dict[str, str]:
    """The matchers from the alert's labels alone, for the placement query."""
    return _from_labels(incident).values


def _from_labels(incident: Incident) -> Scope:
    window = rate_window(incident.lookback)
    if incident.service:
        return Scope(False, (incident.service,), None, None, window)
    node = incident.labels.get("instance")
    if not node:
        return Scope(False, None, None, None, window)
    return Scope(True, None, None, (node,), window)


def placement_of(placement: QueryResult) -> dict[str, str]:
    """service instance -> the node it runs on (its latest placement in the window)."""
    if placement.empty or "node" not in placement.current.columns:
        return {}
    frame = placement.current.sort_values("timestamp")
    last = frame.groupby("instance")["node"].last()
    return {str(instance): str(node) for instance, node in last.items()}


def scope(incident: Incident, placement: QueryResult) -> Scope:
    """The alert's scope completed by the placement; records what it covers."""
    start = _from_labels(incident)
    placed = placement_of(placement)
    services = (
        tuple(sorted({str(s) for s in placement.current["service"].unique()}))
        if not placement.empty and "service" in placement.current.columns
        else ()
    )
    if start.host_alert:
        # A host alert: the node itself, and whatever service instances run on it.
        found = Scope(True, services, tuple(sorted(placed)), start.nodes, start.window)
        what = (
            f"host {start.nodes[0]}, running {steps.join(sorted(placed))}"
            if placed
            else f"host {start.nodes[0]}, with no known service instance on it"
        )
    else:
        nodes = tuple(sorted(set(placed.values())))
        found = Scope(False, start.services, None, nodes, start.window)
        what = (
            f"service {incident.service or 'any'} on {len(placed)} instance(s) across "
            f"{len(nodes)} node(s)"
            if placed
            else f"service {incident.service or 'any'}; its nodes are unknown (no `node` label)"
        )
    steps.checked(incident, f"scope: {what}")
    incident.record(
        Finding(
            severity="info",
            title=f"Scope: {what}",
            detail="Placement read from the `node` label of process_cpu_seconds_total "
            "(high_cpu_placement). "
            + ("; ".join(f"{i} on {n}" for i, n in sorted(placed.items())) or "none found"),
            subject={"instance": start.nodes[0]}
            if start.host_alert and start.nodes
            else {"service": incident.service or "*"},
            metric=placement.name,
            recommendation=None
            if placed
            else "Add a `node` label to the service's targets (equal to node_exporter's "
            "`instance`), or map high_cpu_placement in the config, to compare hosts.",
        )
    )
    return found
