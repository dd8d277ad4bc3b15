"""The sample grid of one scenario: timestamps, daily traffic, seeded noise, counters.

History exists only where a workbook looks: the stretch before and after the alert, and the same
stretch one `baseline` earlier (and each day between, with `days_between`). Every stretch
shares one grid of `step`-spaced samples.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING

import numpy as np

from workbooks.synthetic.scenarios.openmetrics import format_seconds

if TYPE_CHECKING:
    from workbooks.synthetic.scenarios.scenario import Scenario


class Grid:
    """Sample times of every stretch (baseline first) and what every series is built from."""

    def __init__(self, scenario: Scenario) -> None:
        self.seed = scenario.seed
        step = scenario.step.total_seconds()
        (base_start, _), *_, (start, end) = scenario.history_windows
        self.first = base_start.timestamp()
        count = int((end - start).total_seconds() // step) + 1
        current = start.timestamp() + step * np.arange(count)
        self.times = np.concatenate([current - o.total_seconds() for o in scenario.offsets])
        self.time_text = [format_seconds(t) for t in self.times]
        self.onset = scenario.onset.timestamp()
        self.after = self.times >= self.onset
        self.hours_after = np.where(self.after, (self.times - self.onset) / 3600, 0.0)
        # Peak at 15:00 UTC, trough at 03:00, +/-40%.
        hour = (self.times % 86400) / 3600
        self.traffic = 1 + 0.4 * np.sin(2 * np.pi * (hour - 9) / 24)

    def since(self, moment: float) -> np.ndarray:
        """True from `moment` (Unix seconds) on, in the current stretch only."""
        return self.times >= moment

    def rng(self, *key: str) -> np.random.Generator:
        # One stream per series, so a cause and its quiet control share every baseline sample.
        return np.random.default_rng([self.seed, zlib.crc32("|".join(key).encode())])

    def noise(self, sigma: float, *key: str) -> np.ndarray:
        """Multiplicative lognormal noise, one value per sample."""
        return np.exp(self.rng(*key).normal(0.0, sigma, self.times.size))

    def counter(
        self, rate_per_second: np.ndarray, started: float, restarted: float | None = None
    ) -> np.ndarray:
        """Integrate a rate from process start, back to zero at a restart (Unix seconds)."""
        previous = np.concatenate([[started], self.times[:-1]])
        restart = int(np.argmax(self.since(restarted))) if restarted is not None else 0
        if restart:
            previous[restart] = restarted
        total = np.cumsum(rate_per_second * (self.times - previous))
        if restart:
            total[restart:] -= total[restart - 1]
        return total


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
