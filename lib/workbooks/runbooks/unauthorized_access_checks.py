"""unauthorized-access, the pure judgements: a breach, one client, strangers, a broad breakage.

No charts and no findings here: each function reads frames as the sources return them (long:
``timestamp``, labels, ``value``) and returns a small value object that the steps in
:mod:`workbooks.runbooks.unauthorized_access` turn into findings. Unit-tested on hand-built
frames (``tests/test_runbook_unauthorized_access.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from workbooks.notebook import analysis

# Routes that manage the service itself: a credential that works there can mint keys or read
# every client's usage, so a success after a burst of failures there is critical.
ADMIN_ROUTE = re.compile(r"(^|/)(admin|internal|manage|management)(/|$)")
_KEY = ["client_id", "route"]


def is_admin(route: str) -> bool:
    return bool(ADMIN_ROUTE.search(route))


@dataclass(frozen=True)
class Breach:
    """A success right after a burst of failures from the same client on the same route."""

    client_id: str
    route: str
    burst_at: pd.Timestamp
    burst_peak: float  # failures per second at the burst's peak
    failures_normal: float  # the pair's usual failures per second
    success_at: pd.Timestamp
    success_level: float  # successes per second after the burst (a 5-point median's peak)
    success_normal: float  # the pair's usual successes per second
    success_recent: float  # successes per second at the end of the window (still using it?)

    @property
    def admin(self) -> bool:
        return is_admin(self.route)


def _normal(current: pd.Series, baseline: pd.Series | None, since: pd.Timestamp) -> float:
    """The usual level: the baseline window's median, else the median before ``since``.

    A pair absent from the baseline's topk has no baseline; its own recent past stands in.
    """
    if baseline is not None and len(baseline.dropna()):
        return float(baseline.dropna().median())
    before = current[current.index < since].dropna()
    return float(before.median()) if len(before) else 0.0


def find_breaches(
    failures: pd.DataFrame,
    successes: pd.DataFrame,
    *,
    since: pd.Timestamp,
    failures_baseline: pd.DataFrame | None = None,
    successes_baseline: pd.DataFrame | None = None,
    burst_ratio: float = 5.0,
    burst_min: float = 0.05,
    success_ratio: float = 2.0,
    success_min: float = 0.01,
) -> list[Breach]:
    """Pairs (client, route) whose failures burst after ``since`` and whose successes then rose.

    A burst: the pair's failures peak at ``burst_min``/s or more and ``burst_ratio`` times their
    usual level. A success after it: from the burst's start on, the pair's successes (a 5-point
    running median, so one lucky retry is not enough) reach ``success_ratio`` times their usual
    level and at least ``success_min``/s more. A client whose token expired fails, refreshes
    and succeeds as usual: its successes do not rise, so it is not a breach. Worst first
    (admin routes, then the highest success level).
    """
    if failures.empty or successes.empty:
        return []
    found = []
    for (client, route), _ in failures.groupby(_KEY, sort=True):
        pair = {"client_id": str(client), "route": str(route)}
        series = analysis.series_of(failures, **pair)
        normal = _normal(series, _series(failures_baseline, pair), since)
        after = series[series.index >= since].dropna()
        if after.empty:
            continue
        peak = float(after.max())
        if peak < burst_min or peak < burst_ratio * normal:
            continue
        bar = max(burst_min, burst_ratio * normal, peak / 2)
        burst_at = after[after >= bar].index[0]
        ok = analysis.series_of(successes, **pair) if _has(successes) else None
        if ok is None or ok.dropna().empty:
            continue
        usual = _normal(ok, _series(successes_baseline, pair), since)
        smooth = ok.rolling(5, min_periods=3).median()
        later = smooth[smooth.index >= burst_at].dropna()
        above = later[later >= max(success_ratio * usual, usual + success_min)]
        if above.empty:
            continue
        found.append(
            Breach(
                pair["client_id"],
                pair["route"],
                burst_at,
                peak,
                normal,
                above.index[0],
                float(later.max()),
                usual,
                float(later.iloc[-1]),
            )
        )
    return sorted(found, key=lambda b: (not b.admin, -b.success_level))


def _series(frame: pd.DataFrame | None, pair: dict[str, str]) -> pd.Series | None:
    if not _has(frame) or any(label not in frame.columns for label in pair):
        return None
    return analysis.series_of(frame, **pair)


def _has(frame: pd.DataFrame | None) -> bool:
    return frame is not None and not frame.empty


@dataclass(frozen=True)
class ClientShare:
    """Who carries the rise in failures: one client, clients never seen before, or everyone."""

    increase: float  # failures/s above the baseline, service-wide, since the onset
    top_client: str | None
    top_current: float  # its failures/s since the onset
    top_baseline: float  # and in its baseline (0 when it had none)
    top_delta: float  # its failures/s above its own baseline
    next_delta: float  # the next client's
    top_ratio: float | None  # its failures against its own baseline (None: none before)
    known: int  # clients with failures in the baseline (in the topk)
    known_moved: int  # of them, how many fail ``moved_ratio`` times more


def client_share(table: pd.DataFrame, *, increase: float, moved_ratio: float) -> ClientShare:
    """Read a ``top_contributors`` table by ``client_id`` (medians since the onset)."""
    rows = absent_is_zero(table).sort_values("delta", ascending=False, kind="stable")
    known = rows[rows["baseline"] > 0]
    moved = known[known["current"] >= moved_ratio * known["baseline"]]
    top = rows.iloc[0] if len(rows) else None
    ratio = (
        float(top["current"] / top["baseline"]) if top is not None and top["baseline"] > 0 else None
    )
    return ClientShare(
        increase=increase,
        top_client=str(top["client_id"]) if top is not None else None,
        top_current=float(top["current"]) if top is not None else 0.0,
        top_baseline=float(top["baseline"]) if top is not None else 0.0,
        top_delta=float(top["delta"]) if top is not None else 0.0,
        next_delta=float(rows.iloc[1]["delta"]) if len(rows) > 1 else 0.0,
        top_ratio=ratio,
        known=len(known),
        known_moved=len(moved),
    )


def absent_is_zero(table: pd.DataFrame) -> pd.DataFrame:
    """A ``top_contributors`` table where a value absent from the baseline counted zero.

    A counter's rate is absent when nothing happened: a reason or client that did not fail in
    the baseline failed at 0/s then, and its whole current rate is the rise.
    """
    baseline = table["baseline"].fillna(0.0)
    current = table["current"].fillna(0.0)
    return table.assign(
        current=current,
        baseline=baseline,
        delta=current - baseline,
        ratio=(current / baseline.where(baseline > 0)).astype(float),
    )


def share(part: float, whole: float) -> float:
    """``part`` of ``whole`` (0 when there is no whole): who carries the increase."""
    if not math.isfinite(part) or not math.isfinite(whole) or whole <= 0:
        return 0.0
    return max(0.0, part) / whole
