"""What differs between android-deployment and ios-deployment, as data; and the release at hand.

Both runbooks read the same app telemetry (``platform`` label android or ios) and ask the same
questions; only the store's wording for stopping a rollout, the on-device backends and the
runbook's own thresholds (a team overrides each runbook's separately) differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbooks.core.errors import UnknownRunbookError
from workbooks.notebook import frames
from workbooks.notebook.incident import Incident
from workbooks.runbooks import steps

# Declared once, for each platform's runbook (a team may override them per runbook).
DEFAULT_THRESHOLDS = {
    # Crashes per session of the new version against the previous one, on one OS version or
    # device class (or the whole version): critical / warning from here.
    "crash_ratio_critical": 2.0,
    "crash_ratio_warning": 1.3,
    # Crashes per session of a version against its own baseline (a day earlier).
    "crash_baseline_ratio_critical": 2.0,
    "crash_baseline_ratio_warning": 1.3,
    # A value of a breakdown moved at this ratio; culprits stand this far above the next one.
    "moved_ratio": 1.5,
    "stands_out_gap": 1.4,
    # Too few sessions or crashes make a crash rate noise: a slice needs both to be judged.
    "min_sessions": 1000,
    "min_crashes": 10,
    # On-device inference p95 of a backend on a device class against its baseline.
    "latency_ratio_critical": 2.0,
    "latency_ratio_warning": 1.3,
    # Share of model downloads failing, and how many times the previous version's it must be
    # for the new version to be blamed.
    "download_failure_critical": 0.10,
    "download_failure_warning": 0.02,
    "download_vs_previous": 2.0,
}


@dataclass(frozen=True, kw_only=True)
class Platform:
    """One mobile platform: its label, store, backends, and how its store stops a rollout."""

    name: str  # the `platform` label value
    runbook: str
    store: str
    rollout_word: str  # what the store calls a gradual release
    backends: tuple[str, ...]
    halt_text: str  # {version} and {share} filled in
    thresholds: steps.Thresholds

    def halt(self, version: str, share: float | None) -> str:
        """The store's own instruction to stop the rollout of `version`, at its share now."""
        shown = f"{share * 100:.0f}%" if share is not None else "an unknown share"
        return self.halt_text.format(version=version, share=shown)


ANDROID = Platform(
    name="android",
    runbook="android-deployment",
    store="Google Play",
    rollout_word="staged rollout",
    backends=("nnapi", "gpu", "cpu"),
    halt_text=(
        "Halt the staged rollout of {version} in Google Play (it stands at {share}): Play Console "
        "> Release > Production > Halt rollout, or the publishing API (edits.tracks.update on "
        "the production track with the release's `status: halted`, then edits.commit). Users "
        "who have {version} keep it: ship the fix as a new version code."
    ),
    thresholds=steps.Thresholds("android-deployment", **DEFAULT_THRESHOLDS),
)
IOS = Platform(
    name="ios",
    runbook="ios-deployment",
    store="the App Store",
    rollout_word="phased release",
    backends=("ane", "gpu", "cpu"),
    halt_text=(
        "Pause the phased release of {version} in App Store Connect (it stands at {share} of "
        "automatic updates): the version's page > Phased Release for Automatic Updates > Pause "
        "Phased Release. The 7-day schedule is fixed; a pause holds it for up to 30 days, and "
        "anyone can still install {version} from the App Store by hand, so prepare a fixed build."
    ),
    thresholds=steps.Thresholds("ios-deployment", **DEFAULT_THRESHOLDS),
)
PLATFORMS = {platform.runbook: platform for platform in (ANDROID, IOS)}


def platform_of(incident: Incident) -> Platform:
    """The platform of the incident's runbook (android-deployment or ios-deployment)."""
    try:
        return PLATFORMS[incident.runbook]
    except KeyError:
        raise UnknownRunbookError(
            f"runbook {incident.runbook!r} is not a mobile deployment runbook; known: "
            f"{', '.join(PLATFORMS)}"
        ) from None


@dataclass(frozen=True)
class Release:
    """The app version rolling out, the one before it, and its rollout share now."""

    new: str | None
    previous: str | None
    share: float | None  # the store's rollout share of `new` (0..1) at the end of the window
    since: pd.Timestamp | None  # the new version's first sample in the window (its release)
    versions: tuple[str, ...]  # every version with sessions, newest first

    @property
    def compared(self) -> bool:
        """Whether there are two versions to compare."""
        return self.new is not None and self.previous is not None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a version string: numbers as numbers (7.10.0 after 7.9.3)."""
    parts = re.split(r"[.\-+]", version)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


def newest_first(versions: list[str]) -> tuple[str, ...]:
    return tuple(sorted(set(versions), key=version_key, reverse=True))


def find_release(sessions: pd.DataFrame, rollout: pd.DataFrame | None) -> Release:
    """From sessions by app_version (and the rollout share), the new and previous version.

    The newest version with sessions is the one rolling out; the next one down is "previous".
    """
    if sessions.empty or "app_version" not in sessions:
        return Release(None, None, None, None, ())
    versions = newest_first(sessions["app_version"].astype(str).to_list())
    new = versions[0]
    previous = versions[1] if len(versions) > 1 else None
    since = frames.utc(sessions.loc[sessions["app_version"] == new, "timestamp"].min())
    share = None
    if rollout is not None and not rollout.empty and "app_version" in rollout:
        rows = rollout[rollout["app_version"].astype(str) == new].sort_values("timestamp")
        share = float(rows["value"].iloc[-1]) if len(rows) else None
    return Release(new, previous, share, since, versions)


def since_release(incident: Incident, release: Release) -> pd.Timestamp:
    """Where "now" starts for comparisons: the release, or the alert start if earlier/absent."""
    start = frames.utc(incident.starts_at)
    if release.since is None:
        return start - pd.Timedelta(minutes=30)
    return release.since


def crash_free_text(rate: float | None) -> str:
    """Crashes per session as a crash-free session rate: ``99.82%``."""
    if rate is None or pd.isna(rate):
        return "n/a"
    return f"{(1 - rate) * 100:.2f}%"


def count_text(count: float) -> str:
    return f"{count:,.0f}"


SPOKEN = {"os_version": "OS version", "device_class": "device class"}


def spoken(label: str) -> str:
    """A label as a title reads it: ``OS version`` for ``os_version``."""
    return SPOKEN.get(label, label)


def means(frame: pd.DataFrame | None, *, by: list[str], since: pd.Timestamp) -> pd.Series:
    """The mean value per group since `since` (a MultiIndex series; empty without data)."""
    if frame is None or frame.empty or not set(by) <= set(frame.columns):
        return pd.Series(dtype=float)
    stamps = frames.utc_index(frame["timestamp"])
    recent = frame[np.asarray(stamps >= since)]
    if recent.empty:
        return pd.Series(dtype=float)
    return recent.assign(value=frames.floats(recent)).groupby(by)["value"].mean()


def totals(frame: pd.DataFrame | None, *, by: list[str], since: pd.Timestamp) -> pd.Series:
    """Counts per group from per-second rates: their mean since `since` times the span."""
    averaged = means(frame, by=by, since=since)
    if averaged.empty or frame is None:
        return averaged
    end = frames.utc_index(frame["timestamp"]).max()
    return averaged * max((end - since).total_seconds(), 60.0)
