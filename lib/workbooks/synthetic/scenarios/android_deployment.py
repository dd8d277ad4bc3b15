"""android-deployment: a staged Google Play rollout that crashes on one small OS version, model
downloads failing for the new version, crashes rising on every version minutes after a release
that is not to blame, the gpu backend slowing on high-end devices; a quiet release as control.

The fleet and the causes are shared with ios-deployment (:mod:`.mobile_deployment`); this module
gives Android's OS versions, backends (nnapi, gpu, cpu) and rollout share.
"""

from __future__ import annotations

from workbooks.synthetic.scenarios.mobile_deployment import Fleetwide, causes, families
from workbooks.synthetic.scenarios.scenario import AlertRule, Case

RUNBOOK = "android-deployment"

ANDROID = Fleetwide(
    platform="android",
    versions=("7.41.2", "7.42.0", "7.43.0"),
    # Android 12 is a small share that always crashes more than 15: the culprit of a crash case
    # has fewer crashes in absolute numbers than Android 15.
    os_versions={"15": 0.42, "14": 0.30, "13": 0.18, "12": 0.07, "11": 0.03},
    os_crash={"15": 0.0015, "14": 0.0018, "13": 0.0022, "12": 0.0030, "11": 0.0040},
    backends={"nnapi": (0.5, 0.030), "gpu": (0.3, 0.020), "cpu": (0.2, 0.080)},
    sessions_per_second=80.0,
    rollout_share=0.20,
)
NEW = ANDROID.new

_CRASH_RATE = (
    'sum by (service, app_version) (rate(app_crashes_total{platform="android"}[30m]))'
    ' / sum by (service, app_version) (rate(app_sessions_total{platform="android"}[30m]))'
)
ALERT = AlertRule(
    alertname="AndroidDeploymentIssue",
    severity="critical",
    expr=f"max by (service) ({_CRASH_RATE}) > 0.004",
    summary="Android release health of {service}",
    description="An app version of {service} on Android crashes in more than 0.4% of sessions.",
)
FAMILIES = families(ANDROID)
CAUSES = causes(ANDROID)
LABELS = ANDROID.labels()

DEMO = Case(
    id="demo",
    cause="crash_on_os",
    seed=7,
    affected={"os_version": "12"},
    expect={"app_version": NEW, "os_version": "12"},
)

CASES = (
    # Android 12 is 7% of sessions: Android 15 has more crashes in absolute numbers.
    Case(
        id="mob-and-crash-os12",
        cause="crash_on_os",
        seed=31,
        magnitude=5.0,
        affected={"os_version": "12"},
        expect={"app_version": NEW, "os_version": "12"},
    ),
    Case(
        id="mob-and-downloads",
        cause="download_failures",
        seed=32,
        magnitude=0.25,
        expect={"app_version": NEW},
    ),
    # A release 5 minutes before crashes rise on every version: not the cause.
    Case(
        id="mob-and-everywhere",
        cause="crashes_everywhere",
        seed=33,
        magnitude=2.5,
        expect={"platform": "android"},
        not_named={"app_version": NEW},
    ),
    # gpu on high-end devices doubles and stays faster than cpu on low-end devices; the release
    # went out 90 minutes earlier.
    Case(
        id="mob-and-gpu-high-end",
        cause="slow_backend",
        seed=35,
        magnitude=2.0,
        expect={"backend": "gpu", "device_class": "high_end"},
        not_named={"app_version": NEW},
    ),
    # The new version (16% of sessions) runs nnapi 3x slower on low-end devices, which are
    # always the slowest: the release is to blame, not the device class.
    Case(
        id="mob-and-new-nnapi",
        cause="slow_new_version",
        seed=36,
        magnitude=3.0,
        affected={"backend": "nnapi", "device_class": "low_end"},
        expect={"app_version": NEW, "backend": "nnapi", "device_class": "low_end"},
    ),
    Case(id="mob-and-quiet", cause="none", seed=34, expect={}),
)
