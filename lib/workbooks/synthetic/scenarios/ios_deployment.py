"""ios-deployment: a phased App Store release that crashes on one OS version, the GPU backend
slowing down on high-end devices (low-end devices are always the slowest), model downloads failing
for the new version, crashes rising on every version after a release that is not to blame; a quiet
release as control.

The fleet and the causes are shared with android-deployment (:mod:`.mobile_deployment`); this
module gives iOS's OS versions, backends (ane, gpu, cpu) and phased-release share.
"""

from __future__ import annotations

from workbooks.synthetic.scenarios.mobile_deployment import Fleetwide, causes, families
from workbooks.synthetic.scenarios.scenario import AlertRule, Case

RUNBOOK = "ios-deployment"

IOS = Fleetwide(
    platform="ios",
    versions=("7.41.1", "7.42.0", "7.43.0"),
    os_versions={"18": 0.55, "17": 0.30, "16": 0.12, "15": 0.03},
    os_crash={"18": 0.0010, "17": 0.0012, "16": 0.0016, "15": 0.0022},
    backends={"ane": (0.6, 0.012), "gpu": (0.25, 0.020), "cpu": (0.15, 0.060)},
    sessions_per_second=150.0,
    # Day 4 of the 7-day phased release: 10% of automatic updates.
    rollout_share=0.10,
)
NEW = IOS.new

_P95 = (
    "histogram_quantile(0.95, sum by (service, backend, device_class, le)"
    ' (rate(ondevice_inference_duration_seconds_bucket{{platform="ios"}}[10m]{})))'
)
ALERT = AlertRule(
    alertname="IOSDeploymentIssue",
    severity="critical",
    expr=f"max by (service) ({_P95.format('')} / {_P95.format(' offset 1d')}) > 2",
    summary="iOS release health of {service}",
    description="On-device inference of {service} on iOS is more than twice as slow as a day "
    "earlier on some backend and device class.",
)
FAMILIES = families(IOS)
CAUSES = causes(IOS)
LABELS = IOS.labels()

DEMO = Case(
    id="demo",
    cause="slow_backend",
    seed=8,
    affected={"backend": "gpu", "device_class": "high_end"},
    expect={"backend": "gpu", "device_class": "high_end"},
)

CASES = (
    # iOS 16 is 12% of sessions and crashes 2.5x on the new version: iOS 18 has more crashes.
    Case(
        id="mob-ios-crash-os16",
        cause="crash_on_os",
        seed=41,
        magnitude=2.5,
        affected={"os_version": "16"},
        expect={"app_version": NEW, "os_version": "16"},
    ),
    # gpu on high-end devices slows 2.5x and is still faster than cpu on low-end devices.
    Case(
        id="mob-ios-gpu-high-end",
        cause="slow_backend",
        seed=42,
        magnitude=2.5,
        expect={"backend": "gpu", "device_class": "high_end"},
        not_named={"app_version": NEW},
    ),
    Case(
        id="mob-ios-ane-mid",
        cause="slow_backend",
        seed=43,
        magnitude=1.8,
        affected={"backend": "ane", "device_class": "mid_range"},
        expect={"backend": "ane", "device_class": "mid_range"},
    ),
    Case(
        id="mob-ios-downloads",
        cause="download_failures",
        seed=44,
        magnitude=0.08,
        expect={"app_version": NEW},
    ),
    # Crashes rise 1.8x on every version 5 minutes after the release: not the release.
    Case(
        id="mob-ios-everywhere",
        cause="crashes_everywhere",
        seed=46,
        magnitude=1.8,
        expect={"platform": "ios"},
        not_named={"app_version": NEW},
    ),
    Case(id="mob-ios-quiet", cause="none", seed=45, expect={}),
)
