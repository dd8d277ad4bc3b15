"""Analysis on synthetic series whose answer we planted: the onset, the culprit, the leak."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbooks.notebook.analysis import (
    Comparison,
    changes,
    compare,
    find_onset,
    nearest_before,
    series_of,
    time_to_limit,
    to_wide,
    top_contributors,
    trend,
)

GiB = 2**30
START = pd.Timestamp("2026-11-02T08:00:00Z")
MINUTES = pd.date_range(START, periods=120, freq="min")  # a 2 h lookback at a 1 min step


def series(values: np.ndarray, index: pd.DatetimeIndex = MINUTES) -> pd.Series:
    return pd.Series(values, index=index[: len(values)], name="value")


def long_frame(columns: dict[str, np.ndarray], *, label: str = "route") -> pd.DataFrame:
    """The long shape a source returns: one block of rows per label value."""
    parts = [
        pd.DataFrame({"timestamp": MINUTES[: len(v)], label: name, "value": v})
        for name, v in columns.items()
    ]
    return pd.concat(parts, ignore_index=True)


def noise_with_daily_drift(seed: int, *, noise: float, drift: float, level: float = 100.0):
    """Flat traffic: gaussian noise plus a slice of a daily sine at a random phase."""
    rng = np.random.default_rng(seed)
    hours = np.arange(len(MINUTES)) / 60
    daily = drift * np.sin(2 * np.pi * hours / 24 + rng.uniform(0, 2 * np.pi))
    return series(level * (1 + daily) + rng.normal(0, noise * level, len(MINUTES)))


# --- reshaping ------------------------------------------------------------------------------


def test_to_wide_one_column_per_label_value():
    frame = long_frame({"/v1/chat": np.full(5, 1.0), "/v1/vision": np.full(5, 2.0)})
    wide = to_wide(frame, "route")
    assert list(wide.columns) == ["/v1/chat", "/v1/vision"]
    assert str(wide.index.dtype) == "datetime64[ns, UTC]"
    assert wide["/v1/vision"].tolist() == [2.0] * 5


def test_to_wide_joins_several_labels_as_name_value_pairs():
    frame = long_frame({"/v1/chat": np.ones(3)})
    frame["code"] = "500"
    wide = to_wide(frame, ["route", "code"])
    assert list(wide.columns) == ["route=/v1/chat, code=500"]


def test_to_wide_refuses_to_merge_series_silently_unless_told_how():
    frame = long_frame({"api-1": np.full(4, 1.0), "api-2": np.full(4, 3.0)}, label="instance")
    frame["route"] = "/v1/chat"
    with pytest.raises(ValueError, match="instance"):
        to_wide(frame, "route")
    assert to_wide(frame, "route", agg="sum")["/v1/chat"].tolist() == [4.0] * 4


def test_to_wide_of_an_empty_result_is_empty():
    empty = pd.DataFrame({"timestamp": pd.Series(dtype="datetime64[ns, UTC]"), "value": []})
    assert to_wide(empty, "route").empty


def test_series_of_picks_one_series_and_names_it():
    frame = long_frame({"/v1/chat": np.arange(3.0), "/v1/vision": np.arange(3.0) * 10})
    picked = series_of(frame, route="/v1/vision")
    assert picked.tolist() == [0.0, 10.0, 20.0]
    assert picked.name == "route=/v1/vision"
    assert picked.index[0] == START


def test_series_of_with_several_matches_says_which_labels_differ():
    frame = long_frame({"/v1/chat": np.ones(3), "/v1/vision": np.ones(3)})
    with pytest.raises(ValueError, match="route"):
        series_of(frame)


def test_series_of_reads_naive_timestamps_as_utc():
    frame = pd.DataFrame({"timestamp": MINUTES[:3].tz_localize(None), "value": [1.0, 2.0, 3.0]})
    assert series_of(frame).index[0] == START


# --- compare --------------------------------------------------------------------------------


def test_compare_takes_medians_since_the_given_time_over_the_same_span():
    current = series(np.r_[np.full(60, 100.0), np.full(60, 250.0)])
    baseline = series(np.r_[np.full(60, 999.0), np.full(60, 100.0)])
    result = compare(current, baseline, since=MINUTES[60])
    assert (result.current, result.baseline, result.ratio) == (250.0, 100.0, 2.5)
    assert result.delta == 150.0
    assert result.points == 60


def test_compare_over_the_last_tail_and_as_iso_string():
    current = series(np.r_[np.full(110, 1.0), np.full(10, 3.0)])
    baseline = series(np.full(120, 1.0))
    assert compare(current, baseline, tail=pd.Timedelta("9min")).ratio == 3.0
    assert compare(current, baseline, since="2026-11-02T09:50:00Z").ratio == 3.0


def test_compare_ignores_nan_and_gives_no_ratio_against_a_zero_baseline():
    current = series(np.array([1.0, np.nan, 3.0, np.nan]))
    result = compare(current, series(np.zeros(4)))
    assert result.current == 2.0 and result.points == 2
    assert result.ratio is None and result.delta == 2.0


@pytest.mark.parametrize("values", [np.array([]), np.array([np.nan, np.nan])])
def test_compare_of_nothing_is_nan_not_an_error(values):
    result = compare(series(values), series(values))
    assert isinstance(result, Comparison)
    assert math.isnan(result.current) and math.isnan(result.baseline)
    assert result.ratio is None and result.points == 0


def test_compare_single_point():
    result = compare(series(np.array([4.0])), series(np.array([2.0])))
    assert result.ratio == 2.0 and result.points == 1


# --- top contributors -----------------------------------------------------------------------


def test_top_contributors_ranks_by_change_against_own_baseline_not_by_size():
    rng = np.random.default_rng(7)
    flat_big = 1000 + rng.normal(0, 10, 120)
    rising_small = np.r_[np.full(60, 50.0), np.full(60, 150.0)] + rng.normal(0, 1, 120)
    current = long_frame(
        {"/v1/chat": flat_big, "/v1/vision": rising_small, "/v1/audio": np.full(120, 20.0)}
    )
    baseline = long_frame(
        {
            "/v1/chat": 1000 + rng.normal(0, 10, 120),
            "/v1/vision": 50 + rng.normal(0, 1, 120),
            "/v1/audio": np.full(120, 20.0),
        }
    )
    table = top_contributors(current, baseline, by="route", since=MINUTES[60])
    assert list(table.columns) == ["route", "current", "baseline", "ratio", "delta"]
    assert table["route"].iloc[0] == "/v1/vision"
    assert table["ratio"].iloc[0] == pytest.approx(3.0, rel=0.05)
    assert table.loc[table["route"] == "/v1/chat", "current"].item() > 900  # largest, yet not first


def test_top_contributors_lists_a_new_label_value_after_those_with_ratios():
    current = long_frame(
        {"2.3.1": np.full(120, 10.0), "2.4.0": np.full(120, 40.0)}, label="model_version"
    )
    baseline = long_frame({"2.3.1": np.full(120, 10.0)}, label="model_version")
    table = top_contributors(current, baseline, by="model_version")
    assert table["model_version"].tolist() == ["2.3.1", "2.4.0"]
    assert math.isnan(table["ratio"].iloc[1]) and table["current"].iloc[1] == 40.0


@pytest.mark.parametrize(
    "since", [None, MINUTES[30], MINUTES[119], MINUTES[0] - pd.Timedelta("1h")]
)
def test_top_contributors_gives_each_label_what_compare_gives_its_series(since):
    """The table is one pass over all the series; each row must still read as compare() of
    that label's own series: gaps, NaN, a series that ends early, one only in the baseline."""
    rng = np.random.default_rng(11)
    gappy = rng.normal(50, 5, 120)
    gappy[rng.random(120) < 0.3] = np.nan
    current = long_frame(
        {
            "/v1/chat": rng.normal(100, 10, 120),
            "/v1/vision": gappy,
            "/v1/audio": rng.normal(20, 2, 45),  # stopped reporting after 45 minutes
            "/v1/nan": np.full(120, np.nan),
        }
    )
    baseline = long_frame(
        {
            "/v1/chat": rng.normal(100, 10, 120),
            "/v1/vision": rng.normal(25, 5, 120),
            "/v1/audio": rng.normal(20, 2, 120),
            "/v1/nan": rng.normal(5, 1, 120),
            "/v1/gone": rng.normal(7, 1, 120),  # absent from the current window
        }
    )
    table = top_contributors(current, baseline, by="route", since=since)
    assert sorted(table["route"]) == ["/v1/audio", "/v1/chat", "/v1/gone", "/v1/nan", "/v1/vision"]
    for row in table.itertuples(index=False):
        now = series_of(current, route=row.route)
        expected = compare(now, series_of(baseline, route=row.route), since=since)
        assert (row.current, row.baseline) == pytest.approx(
            (expected.current, expected.baseline), nan_ok=True, rel=0, abs=0
        )
        assert math.isnan(row.ratio) if expected.ratio is None else row.ratio == expected.ratio


def test_top_contributors_down_puts_the_largest_drop_first():
    current = long_frame({"a": np.full(10, 90.0), "b": np.full(10, 20.0)})
    baseline = long_frame({"a": np.full(10, 100.0), "b": np.full(10, 100.0)})
    assert top_contributors(current, baseline, by="route", direction="down")["route"][0] == "b"
    with pytest.raises(ValueError, match="direction"):
        top_contributors(current, baseline, by="route", direction="sideways")


# --- onset ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("planted", [15, 60, 105])
def test_find_onset_finds_a_step_within_two_points(seed, planted):
    rng = np.random.default_rng(seed)
    latency = 0.2 + rng.normal(0, 0.01, 120)
    latency[planted:] += 0.08  # 40 % slower, 8 noise sigmas
    onset = find_onset(series(latency))
    assert onset is not None
    assert abs(MINUTES.get_loc(onset.at) - planted) <= 2
    assert (onset.kind, onset.direction) == ("step", "up")
    assert onset.before == pytest.approx(0.2, abs=0.01)
    assert onset.after == pytest.approx(0.28, abs=0.01)


def test_find_onset_finds_a_step_down_to_zero():
    up = np.ones(120)
    up[80:] = 0.0
    onset = find_onset(series(up))
    assert onset is not None and onset.direction == "down" and onset.at == MINUTES[80]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("planted", [30, 70])
def test_find_onset_finds_where_a_ramp_began(seed, planted):
    rng = np.random.default_rng(seed)
    minutes = np.arange(120)
    memory = (
        4 * GiB + 0.02 * GiB * np.maximum(0, minutes - planted) + rng.normal(0, 0.02 * GiB, 120)
    )
    onset = find_onset(series(memory))
    assert onset is not None
    assert onset.kind == "ramp" and onset.direction == "up"
    assert abs(MINUTES.get_loc(onset.at) - planted) <= 2
    assert onset.after == pytest.approx(memory[-3:].mean(), rel=0.02)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("noise", "drift"), [(0.002, 0.05), (0.02, 0.03), (0.05, 0.1)])
def test_find_onset_sees_nothing_in_noise_with_daily_drift(seed, noise, drift):
    assert find_onset(noise_with_daily_drift(seed, noise=noise, drift=drift)) is None


def test_find_onset_ignores_a_lone_spike_and_a_leak_already_under_way():
    rng = np.random.default_rng(11)
    spiky = 100 + rng.normal(0, 2, 120)
    spiky[50:52] += 80
    assert find_onset(series(spiky)) is None
    leak = 6 * GiB + 0.01 * GiB * np.arange(120) + rng.normal(0, 0.01 * GiB, 120)
    assert find_onset(series(leak)) is None


def test_find_onset_skips_nan_and_tolerates_tiny_series():
    rng = np.random.default_rng(5)
    values = 100 + rng.normal(0, 2, 120)
    values[60:] += 30
    values[::7] = np.nan
    onset = find_onset(series(values))
    assert onset is not None and abs(MINUTES.get_loc(onset.at) - 60) <= 2
    assert find_onset(series(np.array([]))) is None
    assert find_onset(series(np.array([1.0]))) is None
    assert find_onset(series(np.array([1.0, 9.0, 9.0]))) is None
    assert find_onset(series(np.full(120, np.nan))) is None


# --- trend and time to limit ----------------------------------------------------------------


def test_trend_slope_per_second_and_per_hour():
    memory = 2 * GiB + (GiB / 3600) * 60 * np.arange(120)  # +1 GiB per hour
    fit = trend(series(memory))
    assert fit.per_hour == pytest.approx(GiB)
    assert fit.slope == pytest.approx(GiB / 3600)
    assert fit.r2 == pytest.approx(1.0)
    assert trend(series(memory), since=MINUTES[100]).points == 20


def test_time_to_limit_for_a_leak_reaching_16_gib():
    rng = np.random.default_rng(2)
    memory = 6 * GiB + (GiB / 3600) * 60 * np.arange(120) + rng.normal(0, 0.02 * GiB, 120)
    eta = time_to_limit(series(memory), 16 * GiB)
    expected = (16 * GiB - memory[-1]) / (GiB / 3600)  # seconds at 1 GiB/h from the last point
    assert eta is not None
    assert eta.total_seconds() == pytest.approx(expected, rel=0.05)  # about 8 h


def test_time_to_limit_is_zero_past_the_limit_and_none_when_flat_falling_or_noisy():
    rng = np.random.default_rng(4)
    assert time_to_limit(series(np.full(10, 17.0 * GiB)), 16 * GiB) == pd.Timedelta(0)
    assert time_to_limit(series(np.full(10, 4.0 * GiB)), 16 * GiB) is None
    assert time_to_limit(series(np.linspace(8, 4, 10) * GiB), 16 * GiB) is None
    assert time_to_limit(series(4 * GiB + rng.normal(0, GiB, 120)), 16 * GiB) is None
    assert time_to_limit(series(np.array([])), 16 * GiB) is None


def test_time_to_limit_downwards_for_free_disk_space():
    free = 100 * GiB - 10 * GiB * np.arange(5)  # -10 GiB a minute
    eta = time_to_limit(series(free), 0.0, direction="down")
    assert eta == pd.Timedelta(minutes=6)


# --- changes --------------------------------------------------------------------------------


def rollout_frame() -> pd.DataFrame:
    """model_info on 4 instances: 2.4.0 reaches api-1 at 08:20 and api-2 at 08:23; the old
    series lingers one sample on api-1; api-3 misses two scrapes; api-4 stays on 2.3.1."""
    rows = []
    for minute, when in enumerate(MINUTES[:40]):
        for instance, switch in (("api-1", 20), ("api-2", 23), ("api-3", None), ("api-4", None)):
            if instance == "api-3" and minute in (10, 11):
                continue
            versions = ["2.3.1"] if switch is None or minute < switch else ["2.4.0"]
            if instance == "api-1" and minute == switch:
                versions.append("2.3.1")
            for version in versions:
                rows.append((when, instance, "llm", version, 1.0))
    return pd.DataFrame(rows, columns=["timestamp", "instance", "model", "model_version", "value"])


def test_changes_lists_each_instance_once_when_a_version_rolls_out():
    rollout = changes(rollout_frame(), label="model_version")
    assert list(rollout.columns) == ["timestamp", "instance", "model", "label", "from", "to"]
    assert rollout["instance"].tolist() == ["api-1", "api-2"]
    assert rollout["timestamp"].tolist() == [MINUTES[20], MINUTES[23]]
    assert set(rollout["from"]) == {"2.3.1"} and set(rollout["to"]) == {"2.4.0"}
    assert set(rollout["label"]) == {"model_version"}


def test_changes_for_the_fleet_and_for_a_rollback():
    fleet = changes(rollout_frame(), label="model_version", by=[])
    assert fleet[["timestamp", "to"]].values.tolist() == [[MINUTES[20], "2.4.0"]]
    frame = long_frame({"x": np.ones(9)}, label="instance")
    frame["model_version"] = ["1"] * 3 + ["2"] * 3 + ["1"] * 3
    assert changes(frame, label="model_version")["to"].tolist() == ["2", "1"]


def test_changes_of_an_empty_result_has_the_columns():
    empty = pd.DataFrame(columns=["timestamp", "instance", "model_version", "value"])
    assert list(changes(empty, label="model_version").columns) == [
        "timestamp",
        "instance",
        "label",
        "from",
        "to",
    ]


def transitions_by_hand(
    samples: list[tuple[int, str, str | None, str | None, float]], by: list[str]
) -> list[tuple[pd.Timestamp, ...]]:
    """The rule of ``changes`` spelled out one series at a time, in plain Python."""
    shown: dict[tuple[str, ...], dict[int, set[str]]] = {}
    for minute, instance, model, version, value in samples:
        if math.isnan(value) or value == 0:
            continue
        labels = {"instance": instance, "model": model}
        key = tuple(labels[name] or "" for name in by)
        shown.setdefault(key, {}).setdefault(minute, set()).add(version or "")
    rows = []
    for key, by_minute in shown.items():
        minutes = sorted(by_minute)
        current = max(by_minute[minutes[0]])  # present when the window opens: no change
        for previous, minute in itertools.pairwise(minutes):
            for version in sorted(by_minute[minute] - by_minute[previous]):
                if version != current:
                    rows.append((MINUTES[minute], *key, "model_version", current, version))
                    current = version
    return sorted(rows, key=lambda row: row[: 1 + len(by)])


@settings(max_examples=300, deadline=None)
@given(
    samples=st.lists(
        st.tuples(
            st.integers(0, 6),
            st.sampled_from(["api-1", "api-2", "api-10"]),
            st.sampled_from(["llm", "vision", None]),
            st.sampled_from(["2.3.1", "2.4.0", "2.10.0", None]),
            st.sampled_from([1.0, 1.0, 0.0, math.nan]),
        ),
        max_size=40,
    ),
    by=st.sampled_from([["instance"], [], ["model", "instance"], ["instance", "model"]]),
)
def test_changes_follows_its_rule_on_any_samples(samples, by):
    frame = pd.DataFrame(
        [(MINUTES[minute], *rest) for minute, *rest in samples],
        columns=["timestamp", "instance", "model", "model_version", "value"],
    )
    found = changes(frame, label="model_version", by=by)
    assert list(found.columns) == ["timestamp", *by, "label", "from", "to"]
    assert [tuple(row) for row in found.itertuples(index=False)] == transitions_by_hand(samples, by)


def test_nearest_before_finds_the_deploy_just_before_the_onset():
    rollout = changes(rollout_frame(), label="model_version")
    onset = MINUTES[26]
    assert nearest_before(rollout, onset, within=pd.Timedelta("5min")) == MINUTES[23]
    assert nearest_before(rollout, onset, within="2min") is None
