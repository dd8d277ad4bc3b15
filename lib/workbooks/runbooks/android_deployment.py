"""android-deployment: a new Android app version against the previous one; stop its rollout?

The steps are :mod:`workbooks.runbooks.mobile_deployment`'s, shared with the other mobile
platform: they read the platform from the incident's runbook id. Thresholds are declared there
(:data:`workbooks.runbooks.mobile_deployment_platform.DEFAULT_THRESHOLDS`); a team overrides
them in its config under ``runbooks:``, ``android-deployment:``, ``thresholds:``.
"""

from __future__ import annotations

from workbooks.runbooks.mobile_deployment import (
    crash_breakdown,
    crash_free,
    downloads,
    latency,
    release,
    resolution,
    still_happening,
)

__all__ = [
    "crash_breakdown",
    "crash_free",
    "downloads",
    "latency",
    "release",
    "resolution",
    "still_happening",
]
