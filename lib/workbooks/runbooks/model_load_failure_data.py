"""model-load-failure, the numbers: load counts by instance, version and reason, and what follows.

Loads are rare events (a few an hour per instance), so a rate at one moment says little. This
module integrates the per-second rates over the window into counts, and keeps when each kind of
load was first and last seen. Everything here is pure (frames in, value objects out) so the
steps in :mod:`workbooks.runbooks.model_load_failure` stay about what to say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

from workbooks.core.findings import format_value

KEYS = ["instance", "model", "model_version", "result", "reason"]


@dataclass(frozen=True)
class Now:
    """The state at the end of the window."""

    instances: tuple[str, ...]
    not_ready: tuple[str, ...]
    recent_failures: int
    recent: timedelta


@dataclass(frozen=True)
class Loads:
    """Counts of loads over a window: one row per instance, model, version, result and reason.

    Columns: the :data:`KEYS`, ``count`` (loads, integrated from the rates), ``first`` and
    ``last`` (the first and last sample with a non-zero rate; a rate over 5 minutes lingers
    that long after a load).
    """

    table: pd.DataFrame

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[self.table["result"] == "failure"]

    @property
    def successes(self) -> pd.DataFrame:
        return self.table[self.table["result"] == "success"]

    def instances(self) -> list[str]:
        return sorted(self.table["instance"].unique())

    def model(self) -> str:
        names = sorted(set(self.table["model"]) - {""})
        return names[0] if names else "the model"

    def loaded_by(self, version: str, *, since: pd.Timestamp | None = None) -> list[str]:
        """Instances that loaded ``version`` successfully (since a moment, if given)."""
        rows = self.successes[self.successes["model_version"] == version]
        if since is not None:
            rows = rows[rows["last"] >= since]
        return sorted(rows["instance"].unique())

    def tried(self, version: str) -> list[str]:
        return sorted(self.table[self.table["model_version"] == version]["instance"].unique())


def count_loads(frame: pd.DataFrame | None, step_seconds: int) -> Loads:
    """Integrate ``sum by (KEYS) (rate(model_load_total[5m]))`` into counts (see :class:`Loads`)."""
    columns = [*KEYS, "count", "first", "last"]
    if frame is None or frame.empty:
        return Loads(pd.DataFrame(columns=columns))
    tidy = frame.copy()
    for key in KEYS:
        # Prometheus drops an empty label (reason on success): it comes back missing or NaN.
        tidy[key] = tidy[key].fillna("").astype(str) if key in tidy else ""
    tidy = tidy[tidy["value"].notna() & (tidy["value"] > 0)]
    if tidy.empty:
        return Loads(pd.DataFrame(columns=columns))
    tidy["timestamp"] = pd.to_datetime(tidy["timestamp"], utc=True)
    grouped = tidy.groupby(KEYS, sort=True)
    table = grouped.agg(
        total=("value", "sum"), first=("timestamp", "min"), last=("timestamp", "max")
    ).reset_index()
    # Each load shows up in every sample of its 5-minute rate window: the integral is the count.
    table["count"] = [max(1, round(v * step_seconds)) for v in table.pop("total")]
    return Loads(table[columns])


def attempted_versions(frame: pd.DataFrame | None) -> pd.DataFrame:
    """An info-style frame (timestamp, instance, model_version, value=1) of the version each
    instance was loading, from its load attempts: what the shared rollout steps read.

    ``model_info`` only shows versions that loaded; a version that never loads is seen only in
    its attempts, so the rollout of a broken version is found here.
    """
    columns = ["timestamp", "instance", "model_version", "value"]
    if frame is None or frame.empty or "model_version" not in frame:
        return pd.DataFrame(columns=columns)
    tidy = frame[frame["value"].notna() & (frame["value"] > 0)]
    if tidy.empty:
        return pd.DataFrame(columns=columns)
    # While a rollout's 5-minute rate window still holds the old version, the newest wins: each
    # version ranked once, then the top rank of every (instance, timestamp), at once (a loop
    # over those groups took 95 ms a call on the demo).
    versions = tidy["model_version"].astype(str)
    rank = {version: i for i, version in enumerate(sorted(set(versions), key=version_key))}
    ranks = pd.Series([rank[v] for v in versions.tolist()], index=tidy.index)
    newest = ranks.groupby([tidy["instance"], tidy["timestamp"]], sort=True).idxmax()
    return pd.DataFrame(
        {
            "timestamp": tidy.loc[newest, "timestamp"].to_numpy(),
            "instance": tidy.loc[newest, "instance"].tolist(),
            "model_version": versions.loc[newest].tolist(),
            "value": 1.0,
        },
        columns=columns,
    )


def version_key(version: str) -> tuple:
    """Sort key for versions: numerically by dotted parts (2.10.0 after 2.9.1)."""
    parts = []
    for part in str(version).replace("-", ".").split("."):
        parts.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return tuple(parts)


def rollback_target(current: Loads, baseline: Loads, *, exclude: set[str]) -> str | None:
    """The newest version that loaded on every instance, in the window or its baseline.

    ``exclude`` are versions named as the cause. None when no version loaded everywhere.
    """
    instances = set(current.instances())
    candidates = []
    for loads in (current, baseline):
        for version, group in loads.successes.groupby("model_version"):
            if version not in exclude and instances and instances <= set(group["instance"]):
                candidates.append(str(version))
    return max(candidates, key=version_key) if candidates else None


def last_values(frame: pd.DataFrame | None, by: str = "instance") -> dict[str, float]:
    """Each ``by`` value's last sample."""
    if frame is None or frame.empty or by not in frame:
        return {}
    ordered = frame.sort_values("timestamp")
    return {str(k): float(v) for k, v in ordered.groupby(by)["value"].last().items()}


def median_since(frame: pd.DataFrame | None, since: pd.Timestamp, by: str) -> dict[str, float]:
    """Each ``by`` value's median from ``since`` on (NaN samples left out)."""
    if frame is None or frame.empty or by not in frame:
        return {}
    recent = frame[pd.to_datetime(frame["timestamp"], utc=True) >= since]
    found = recent.dropna(subset=["value"]).groupby(by)["value"].median()
    return {str(k): float(v) for k, v in found.items() if math.isfinite(v)}


def table_markdown(
    loads: Loads, now: Now, limit_by: dict[str, float], rss: dict[str, float]
) -> str:
    """Instance x version load results (ok, failed by reason), with memory limit, memory now
    and readiness, as a markdown table."""
    versions = sorted(set(loads.table["model_version"]), key=version_key)
    header = ["instance", "memory limit", "memory now", "ready now", *versions]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for instance in now.instances:
        cells = [
            f"`{instance}`",
            format_value(limit_by[instance], "bytes") if instance in limit_by else "?",
            format_value(rss[instance], "bytes") if instance in rss else "?",
            "**no**" if instance in now.not_ready else "yes",
            *(_cell(loads, instance, version) for version in versions),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(loads: Loads, instance: str, version: str) -> str:
    rows = loads.table[
        (loads.table["instance"] == instance) & (loads.table["model_version"] == version)
    ]
    if rows.empty:
        return "·"
    ok = int(rows[rows["result"] == "success"]["count"].sum())
    failed = rows[rows["result"] == "failure"]
    pairs = zip(failed["reason"], failed["count"], strict=True)
    return ", ".join([f"{ok} ok", *(f"**{n} {r}**" for r, n in pairs)])
