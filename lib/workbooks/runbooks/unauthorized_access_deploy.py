"""unauthorized-access, section 3.4: did a deploy break authentication for everyone?

An attack comes from a few clients or from strangers; a broken build (wrong signing key, audience
or clock) fails the clients that succeeded yesterday, all alike, from the moment it rolled out.
So a build is named when it rolled out near the onset AND at least ``known_moved_share`` of the
known clients fail ``moved_ratio`` times more than in their baseline. Failures that follow no
deploy but hit every known client point at the identity provider or the signing keys instead.
"""

from __future__ import annotations

import pandas as pd

from workbooks.core.findings import Finding, Severity
from workbooks.notebook import analysis
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import steps
from workbooks.runbooks.steps.rollout import NEAR_AFTER, NEAR_BEFORE
from workbooks.runbooks.unauthorized_access_checks import ClientShare


def broad(found: ClientShare | None, *, share: float) -> bool:
    """Whether the known clients fail alike (at least ``share`` of three or more moved)."""
    return found is not None and found.known >= 3 and found.known_moved >= share * found.known


def what_changed(
    incident: Incident,
    builds: QueryResult,
    failures: QueryResult,
    successes: QueryResult,
    found: ClientShare | None,
    *,
    since: pd.Timestamp,
    grade: Severity,
    share: float,
) -> None:
    """Chart failures with the builds deployed; name a build only when the breakage follows it."""
    markers = analysis.changes(builds.current, label="version") if not builds.empty else None
    incident.timeseries(
        failures, onset=since, markers=markers if markers is not None and len(markers) else None
    )
    everyone = broad(found, share=share) and grade != "info"
    deploys = steps.rollouts(builds.current, label="version", by="instance")
    moved = f"{found.known_moved} of {found.known}" if found is not None else "no"
    if not deploys:
        steps.checked(incident, "deploys: no build of the service changed in the window")
        incident.record(
            Finding(
                severity="info",
                title="No build of the service was deployed in the window",
                subject={"service": incident.service},
                metric=builds.name,
            )
        )
        if everyone:
            incident.record(_no_deploy(incident, grade, moved, successes, since))
        return
    for deploy in deploys:
        near = since - NEAR_BEFORE <= deploy.at <= since + NEAR_AFTER
        if near and everyone:
            previous = _previous(markers, deploy.version)
            incident.record(
                _broken_build(incident, deploy, previous, grade, moved, successes, since)
            )
            continue
        why = (
            f"it rolled out at {deploy.at:%H:%M} UTC, not near the onset ({since:%H:%M} UTC)"
            if not near
            else f"only {moved} known clients fail more: not everyone is locked out"
        )
        steps.checked(incident, f"build {deploy.version}: ruled out ({why})")
        incident.record(
            Finding(
                severity="info",
                title=f"Build {deploy.version} rolled out at {deploy.at:%H:%M} UTC on "
                f"{steps.join(deploy.units)}, but the failures do not follow it ({why})",
                subject={"version": deploy.version},
                metric=builds.name,
            )
        )


def _previous(markers: pd.DataFrame | None, version: str) -> str | None:
    if markers is None or not len(markers):
        return None
    rows = markers[markers["to"] == version]
    return str(rows.iloc[0]["from"]) if len(rows) else None


def _successes(successes: QueryResult, since: pd.Timestamp) -> str:
    if successes.empty:
        return "successes: no data"
    change = successes.compare(since=since)
    numbers = steps.change_text(change.current, change.baseline, "/s")
    return f"successful authentications {numbers}"


def _broken_build(
    incident: Incident,
    deploy: steps.Rollout,
    previous: str | None,
    grade: Severity,
    moved: str,
    successes: QueryResult,
    since: pd.Timestamp,
) -> Finding:
    back = f"build {previous}" if previous else "the previous build"
    return Finding(
        severity=grade,
        title=(
            f"Not an attack: build {deploy.version}, deployed at {deploy.at:%H:%M} UTC on "
            f"{steps.join(deploy.units)}, broke authentication for everyone: {moved} known "
            f"clients fail more than in their baseline ({_successes(successes, since)})"
        ),
        detail="Clients that authenticated fine a day earlier all fail at once, from the deploy "
        "on; an attacker would show as a few clients or as clients never seen before.",
        subject={"version": deploy.version, "instance": list(deploy.units)},
        metric="unauthorized_access_builds",
        recommendation=(
            f"Roll {incident.service} back to {back} (your deploy tool's undo, e.g. "
            f"`kubectl rollout undo deployment/{incident.service}`) and watch the failures fall; "
            f"no key needs revoking. Then find what {deploy.version} changed in token validation "
            "(signing keys, issuer or audience, clock) before deploying it again."
        ),
        cause="rollout",
    )


def _no_deploy(
    incident: Incident, grade: Severity, moved: str, successes: QueryResult, since: pd.Timestamp
) -> Finding:
    return Finding(
        severity=grade,
        title=(
            f"Authentication fails for everyone and no build was deployed: {moved} known clients "
            f"fail more than in their baseline ({_successes(successes, since)})"
        ),
        subject={"service": incident.service},
        recommendation="Check what every token check depends on: the identity provider, the "
        "signing keys it publishes (a rotation the service did not pick up), config pushed "
        "without a deploy, and the hosts' clocks.",
        cause="dependency",
    )
