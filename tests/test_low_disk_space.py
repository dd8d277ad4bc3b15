"""low-disk-space steps on small hand-built frames: growth, a step, flat, inodes, read-only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbooks.core.config import Config, RunbookSettings
from workbooks.runbooks import low_disk_space_text as text
from workbooks.runbooks.low_disk_space import THRESHOLDS
from workbooks.runbooks.low_disk_space_fs import filesystems, usage

GIB = 1024**3
START = pd.Timestamp("2026-11-20 12:00", tz="UTC")
TIMES = pd.date_range(START, periods=121, freq="1min")  # two hours, one point a minute
ONSET = 80  # minutes in


def _noise(seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, TIMES.size)


def _free(size: float, used: np.ndarray) -> pd.Series:
    return pd.Series(size - used, index=TIMES)


def _share(size: float, used: np.ndarray) -> pd.Series:
    return pd.Series(used / size, index=TIMES)


def test_steady_growth_from_onset_gives_pace_and_time_to_full() -> None:
    size = 50 * GIB
    minutes = np.arange(TIMES.size)
    used = 18 * GIB + 8 * GIB * np.maximum(minutes - ONSET, 0) / 60 + _noise(1, 0.02 * GIB)
    before = np.full(TIMES.size, 18 * GIB)
    found = usage(_share(size, used), _share(size, before), _free(size, used), size)
    assert found.shape == "growing"
    assert found.per_hour == pytest.approx(8 * GIB, rel=0.05)
    assert abs(found.onset.at - TIMES[ONSET]) <= pd.Timedelta(minutes=2)
    expected_hours = (size - used[-1]) / (8 * GIB)
    assert found.time_to_full.total_seconds() / 3600 == pytest.approx(expected_hours, rel=0.05)


def test_a_download_is_a_step_then_flat_with_no_time_to_full() -> None:
    size = 500 * GIB
    used = 310 * GIB + 180 * GIB * (np.arange(TIMES.size) >= ONSET) + _noise(2, 0.2 * GIB)
    found = usage(_share(size, used), _share(size, used), _free(size, used), size)
    assert found.shape == "step"
    assert found.step == pytest.approx(180 * GIB, rel=0.02)
    assert found.time_to_full is None
    assert found.share == pytest.approx(0.98, abs=0.01)


def test_high_but_flat_is_flat_whatever_its_level() -> None:
    size = 2048 * GIB
    used = 0.88 * size + _noise(3, 0.0005 * size)
    found = usage(_share(size, used), _share(size, used), _free(size, used), size)
    assert (found.shape, found.time_to_full) == ("flat", None)
    assert found.baseline_share == pytest.approx(0.88, abs=0.005)
    assert THRESHOLDS.resolve(_config()).severity(found.share, "used_share") == "info"


def _long(values: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = [
        pd.DataFrame({"timestamp": TIMES, "mountpoint": mountpoint, "value": series})
        for mountpoint, series in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


def _config() -> Config:
    return Config()


def test_filesystems_rank_read_only_then_soonest_full_not_the_fullest() -> None:
    sizes = {"/": 100 * GIB, "/var/log": 50 * GIB, "/data": 2048 * GIB, "/var/cache": 20 * GIB}
    minutes = np.arange(TIMES.size)
    after = np.maximum(minutes - ONSET, 0) / 60
    used = {
        "/": 0.55 * sizes["/"] + _noise(4, 0.01 * GIB),
        "/var/log": 18 * GIB + 8 * GIB * after + _noise(5, 0.02 * GIB),
        "/data": 0.88 * sizes["/data"] + _noise(6, GIB),
        "/var/cache": 6 * GIB + _noise(7, 0.01 * GIB),
    }
    inodes_total = 1.3e6
    inodes_used = {mp: np.full(TIMES.size, 0.1) for mp in sizes}
    inodes_used["/var/cache"] = np.clip(0.25 + 1.0 * after, 0, 1) + _noise(8, 0.0005)
    readonly = {mp: np.zeros(TIMES.size) for mp in sizes}
    readonly["/"] = (minutes >= 100).astype(float)
    free = {mp: sizes[mp] - used[mp] for mp in sizes}
    found = filesystems(
        _long({mp: used[mp] / sizes[mp] for mp in sizes}),
        None,
        _long(free),
        _long({mp: np.full(TIMES.size, sizes[mp]) for mp in sizes}),
        _long(inodes_used),
        None,
        _long({mp: inodes_total * (1 - inodes_used[mp]) for mp in sizes}),
        _long(readonly),
    )
    order = [fs.mountpoint for fs in found]
    # Read-only first; then the inodes that run out in minutes; then the logs (hours); the
    # fullest volume, flat, last but one by urgency though first by share.
    assert order[:3] == ["/", "/var/cache", "/var/log"]
    assert found[0].readonly_since == TIMES[100]
    cache = found[1]
    assert cache.inodes.shape == "growing" and cache.bytes.shape == "flat"
    assert cache.inodes.time_to_full < pd.Timedelta(minutes=30)
    data = next(fs for fs in found if fs.mountpoint == "/data")
    assert data.bytes.time_to_full is None and data.bytes.share > cache.bytes.share


def test_state_and_advice_name_the_numbers_and_commands() -> None:
    size = 50 * GIB
    minutes = np.arange(TIMES.size)
    used = 18 * GIB + 8 * GIB * np.maximum(minutes - ONSET, 0) / 60 + _noise(9, 0.02 * GIB)
    free = _long({"/var/log": size - used})
    (fs,) = filesystems(
        _long({"/var/log": used / size}),
        None,
        free,
        _long({"/var/log": np.full(TIMES.size, size)}),
        pd.DataFrame(),
        None,
        pd.DataFrame(),
        pd.DataFrame(),
    )
    line = text.state(fs, fs.bytes)
    assert line.startswith("/var/log fills by bytes at ")
    assert "GiB/h since 13:20 UTC" in line  # the onset: 80 minutes after 12:00
    assert "of 50.00 GiB used, full in about" in line
    advice = text.bytes_advice("node-1:9100", fs, None, TIMES[-1])
    assert "sudo du -xh --max-depth=2 /var/log" in advice and "logrotate" in advice
    assert " UTC)" in advice  # the clock time it will be full
    assert text.count_text(1_301_456) == "1.3 M"


def test_thresholds_are_a_config_override_away() -> None:
    config = Config(
        runbooks={"low-disk-space": RunbookSettings(thresholds={"used_share_warning": 0.8})}
    )
    limits = THRESHOLDS.resolve(config)
    assert limits.severity(0.85, "used_share") == "warning"
    assert limits.severity(5.0, "hours_to_full", direction="down") == "warning"
    assert limits.severity(2.0, "hours_to_full", direction="down") == "critical"
