"""service-down: a crash loop after a build or model rollout, a node lost while an unrelated
deploy happened, a dependency down first, the front door failing while every target is up, and
a missed scrape.

api-3 has by far the most container restarts in its lifetime (an old flaky pod, long fixed), so
a workbook must count restarts in the window, not in all. The internal probe is always slower
than the external one, so a failing probe is not the slowest one.
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.families import BUILD_INFO, MODEL_INFO
from workbooks.synthetic.scenarios.fleet import INSTANCES, NEW_BUILD, NEW_VERSION, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, fixed, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "service-down"

ALERT = AlertRule(
    alertname="ServiceDown",
    severity="critical",
    expr="count by (service) (up$S == 0) > 0 or min by (service) (probe_success$S) == 0",
    summary="{service} is down",
    description="A target of {service} has been down, or its probe failing, for 5 minutes.",
)

NODES = {"api-0": "node-a", "api-1": "node-b", "api-2": "node-b", "api-3": "node-c"}
LIFETIME_RESTARTS = {"api-0": 1, "api-1": 0, "api-2": 2, "api-3": 37}
DEPENDENCIES = ("model-store", "feature-db")
PROBE_SECONDS = {"external": 0.12, "internal": 0.35}
CERT_VALID_DAYS = 60
# A crash-looping container: down two scrapes of every three (back-off, then a short life).
CRASH_PERIOD = 3


def dependency_name(service: str, dependency: str) -> str:
    """Every case runs in one Prometheus: its dependencies are named after its service."""
    return f"{service}-{dependency}"


def probe_urls(service: str) -> dict[str, str]:
    return {
        "external": f"https://{service}.example.com/healthz",
        "internal": f"http://{service}.svc.cluster.local:8080/healthz",
    }


def _labels(**labels: str) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in labels.items())


def _down(fleet: Fleet, key: str) -> np.ndarray:
    """Where the series under ("down", key) is down (a cause shifted it to 1)."""
    return fleet.offset(("down", key)) >= 0.5


def _up(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        up = np.where(_down(fleet, instance), 0, 1)
        groups.append(fleet.single("up", ints(up), job=fleet.service, instance=instance))
    for url in probe_urls(fleet.service).values():
        # The blackbox exporter's own scrape: up while the exporter answers, whatever the probe.
        groups.append(
            fleet.single("up", ["1"] * fleet.grid.times.size, job="blackbox", instance=url)
        )
    for dependency in DEPENDENCIES:
        name = dependency_name(fleet.service, dependency)
        up = np.where(_down(fleet, name), 0, 1)
        prefix = f"up{{{_labels(job=name, instance=f'{name}-0:9187', service=name)}}}"
        groups.append(fleet.group({prefix: ints(up)}))
    return groups


def _probe_series(fleet: Fleet, metric: str) -> list[Group]:
    """One blackbox metric for both probed URLs (external through the ingress, internal)."""
    groups = []
    for kind, url in probe_urls(fleet.service).items():
        failing = _down(fleet, url)
        labels = fleet.labels(job="blackbox", instance=url)
        if metric == "probe_success":
            values = ints(np.where(failing, 0, 1))
        elif metric == "probe_http_status_code":
            values = ints(np.where(failing, fleet.offset(("status", url)), 200))
        elif metric == "probe_duration_seconds":
            seconds = PROBE_SECONDS[kind] * fleet.grid.noise(0.1, "probe", url)
            # A failed handshake or lookup returns quickly: the failing probe is the faster one.
            values = fixed(np.where(failing, 0.04 * fleet.grid.noise(0.1, "fail", url), seconds), 4)
        elif url.startswith("https"):  # probe_ssl_earliest_cert_expiry: TLS probes only
            expiry = fleet.grid.onset + 86400 * CERT_VALID_DAYS + fleet.offset(("cert", url))
            values = ints(expiry)
        else:
            continue
        groups.append(fleet.group({f"{metric}{{{labels}}}": values}))
    return groups


def _restarts(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        restarts = LIFETIME_RESTARTS[instance] + np.cumsum(fleet.offset(("restart", instance)) > 0)
        pod = _labels(namespace=fleet.service, pod=instance, container=fleet.service)
        prefix = f"kube_pod_container_status_restarts_total{{{pod}}}"
        groups.append(fleet.group({prefix: ints(restarts)}))
    return groups


def _last_terminated(fleet: Fleet) -> list[Group]:
    groups = []
    crash_reason = fleet.scenario.affected.get("reason", "Error")
    for instance in INSTANCES:
        crashing = np.cumsum(fleet.offset(("restart", instance)) > 0) > 0
        pod = _labels(namespace=fleet.service, pod=instance, container=fleet.service)
        name = "kube_pod_container_status_last_terminated_reason"
        if LIFETIME_RESTARTS[instance] and (~crashing).any():
            prefix = f'{name}{{{pod},reason="Error"}}'
            groups.append(fleet.group({prefix: ["1"] * fleet.grid.times.size}, ~crashing))
        if crashing.any():
            prefix = f'{name}{{{pod},reason="{escape(crash_reason)}"}}'
            groups.append(fleet.group({prefix: ["1"] * fleet.grid.times.size}, crashing))
    return groups


def _pod_info(fleet: Fleet) -> list[Group]:
    # One namespace per service, so every case's pods are its own in the shared Prometheus.
    ones = ["1"] * fleet.grid.times.size
    return [
        fleet.group(
            {f"kube_pod_info{{{_labels(namespace=fleet.service, pod=i, node=NODES[i])}}}": ones}
        )
        for i in INSTANCES
    ]


def _upstreams(fleet: Fleet) -> list[Group]:
    groups = []
    for dependency in DEPENDENCIES:
        rate = 15.0 * fleet.grid.traffic * fleet.grid.noise(0.05, "upstream", dependency)
        calls = fleet.grid.counter(rate, fleet.started["api-0"])
        upstream = dependency_name(fleet.service, dependency)
        groups.append(
            fleet.single("upstream_requests_total", ints(calls), upstream=upstream, code="200")
        )
    return groups


def _probe_family(metric: str, help_text: str) -> Family:
    return Family(metric, "gauge", help_text, lambda fleet: _probe_series(fleet, metric))


UP = Family("up", "gauge", "1 if the target's last scrape succeeded.", _up)
PROBE_FAMILIES = (
    _probe_family("probe_success", "1 if the blackbox probe succeeded."),
    _probe_family("probe_http_status_code", "HTTP status of the probe (0: no response)."),
    _probe_family("probe_duration_seconds", "How long the probe took."),
    _probe_family("probe_ssl_earliest_cert_expiry", "Earliest certificate expiry, Unix seconds."),
)
RESTARTS = Family("kube_pod_container_status_restarts", "counter", "Container restarts.", _restarts)
LAST_TERMINATED = Family(
    "kube_pod_container_status_last_terminated_reason",
    "gauge",
    "Why the container last terminated.",
    _last_terminated,
)
POD_INFO = Family("kube_pod_info", "gauge", "Pod placement.", _pod_info)
UPSTREAMS = Family("upstream_requests", "counter", "Calls to each dependency.", _upstreams)
FAMILIES = (
    UP,
    *PROBE_FAMILIES,
    RESTARTS,
    LAST_TERMINATED,
    POD_INFO,
    UPSTREAMS,
    BUILD_INFO,
    MODEL_INFO,
)


def _crash(fleet: Fleet, instances: list[str], *, start_minutes: float = 0.0) -> None:
    """`instances` crash-loop from onset (+ `start_minutes`): down two scrapes in three, one
    container restart per cycle."""
    minutes = (fleet.grid.times - fleet.grid.onset) / 60 - start_minutes
    after = minutes >= 0
    cycle = np.floor(np.where(after, minutes, 0)).astype(int) % CRASH_PERIOD
    for instance in instances:
        fleet.shift(("down", instance), np.where(after & (cycle < 2), 1.0, 0.0))
        fleet.shift(("restart", instance), np.where(after & (cycle == 0), 1.0, 0.0))


def _crash_after_deploy(fleet: Fleet) -> None:
    s = fleet.scenario
    pods = s.affected["instance"].split(",")
    fleet.deploy(pods, s.affected["version"])
    _crash(fleet, pods)


def _crash_after_model(fleet: Fleet) -> None:
    s = fleet.scenario
    pods = s.affected["instance"].split(",")
    fleet.roll_out(pods, s.affected["model_version"], restart=True)
    _crash(fleet, pods)


def _node_lost(fleet: Fleet) -> None:
    s = fleet.scenario
    # An unrelated deploy ten minutes earlier restarts another pod (one missed scrape).
    deployed = s.affected["deployed"].split(",")
    fleet.deploy(deployed, NEW_BUILD, minutes_from_onset=-10)
    restart = np.abs(fleet.grid.times - (fleet.grid.onset - 600)) < 1
    for instance in deployed:
        fleet.shift(("down", instance), restart * 1.0)
    for instance, node in NODES.items():
        if node == s.affected["node"]:
            fleet.shift(("down", instance), fleet.grid.after * 1.0)


def _dependency_down(fleet: Fleet) -> None:
    s = fleet.scenario
    name = dependency_name(fleet.service, s.affected["dependency"])
    fleet.shift(("down", name), (fleet.grid.times >= fleet.grid.onset - 60 * s.magnitude) * 1.0)
    # The pods fail their start-up check without the store and restart, one after another.
    for number, instance in enumerate(INSTANCES):
        _crash(fleet, [instance], start_minutes=number)


def _probe_failing(fleet: Fleet) -> None:
    s = fleet.scenario
    url = probe_urls(fleet.service)["external"]
    fleet.shift(("down", url), fleet.grid.after * 1.0)
    reason = s.affected["reason"]
    code = int(reason.split()[1]) if reason.startswith("HTTP") else 0
    fleet.shift(("status", url), fleet.grid.after * float(code))
    if reason == "certificate expired":
        # It expired at onset: the renewal never happened.
        fleet.shift(("cert", url), -86400.0 * CERT_VALID_DAYS)


def _missed_scrape(fleet: Fleet) -> None:
    fleet.shift(
        ("down", fleet.scenario.affected["instance"]),
        (np.abs(fleet.grid.times - fleet.grid.onset) < 1) * 1.0,
    )


CAUSES = (
    Cause(
        name="crash_after_deploy",
        summary="the pods that got a new build crash-loop (OOMKilled)",
        affected={"instance": "api-0,api-1", "version": NEW_BUILD, "reason": "OOMKilled"},
        magnitude=1.0,
        plant=_crash_after_deploy,
    ),
    Cause(
        name="crash_after_model",
        summary="the pods that loaded a new model version crash-loop",
        affected={"instance": "api-2", "model_version": NEW_VERSION, "reason": "Error"},
        magnitude=1.0,
        plant=_crash_after_model,
    ),
    Cause(
        name="node_lost",
        summary="every pod on one node goes down together; an unrelated deploy just before",
        affected={"node": "node-b", "deployed": "api-3"},
        magnitude=1.0,
        plant=_node_lost,
    ),
    Cause(
        name="dependency_down",
        summary="a dependency goes down (magnitude: minutes before onset); the pods then fail",
        affected={"dependency": "model-store"},
        magnitude=3.0,
        plant=_dependency_down,
    ),
    Cause(
        name="probe_failing",
        summary="the external probe fails (certificate, HTTP code, DNS) while targets stay up",
        affected={"reason": "certificate expired"},
        magnitude=1.0,
        plant=_probe_failing,
    ),
    Cause(
        name="none",
        summary="one missed scrape at onset, nothing down now",
        affected={"instance": "api-2"},
        magnitude=0.0,
        plant=_missed_scrape,
    ),
)

LABELS = {
    "deployed": INSTANCES,
    "node": tuple(sorted(set(NODES.values()))),
    "dependency": DEPENDENCIES,
}

DEMO = Case(
    id="demo",
    cause="crash_after_deploy",
    seed=8,
    expect={"version": NEW_BUILD, "reason": "OOMKilled"},
)

CASES = (
    # api-3 has the most restarts in its lifetime; the culprits have fewer (not the largest).
    Case(
        id="sd-crash-build",
        cause="crash_after_deploy",
        seed=31,
        expect={"version": NEW_BUILD, "reason": "OOMKilled", "instance": ("api-0", "api-1")},
    ),
    Case(
        id="sd-crash-model",
        cause="crash_after_model",
        seed=32,
        expect={"model_version": NEW_VERSION, "instance": "api-2"},
    ),
    # A deploy on api-3 ten minutes before is not the cause.
    Case(
        id="sd-node",
        cause="node_lost",
        seed=33,
        expect={"node": "node-b", "instance": ("api-1", "api-2")},
        not_named={"version": NEW_BUILD},
    ),
    Case(
        id="sd-dependency",
        cause="dependency_down",
        seed=34,
        expect={"dependency": dependency_name("svc-sd-dependency", "model-store")},
    ),
    # The failing probe is the faster one: a failed TLS handshake returns quickly.
    Case(
        id="sd-probe-cert",
        cause="probe_failing",
        seed=35,
        expect={
            "instance": probe_urls("svc-sd-probe-cert")["external"],
            "reason": "certificate expired",
        },
    ),
    Case(
        id="sd-probe-ingress",
        cause="probe_failing",
        seed=36,
        affected={"reason": "HTTP 503"},
        expect={"instance": probe_urls("svc-sd-probe-ingress")["external"], "reason": "HTTP 503"},
    ),
    Case(id="sd-quiet", cause="none", seed=37, expect={}),
)
