"""Durations as Prometheus writes them (``30m``, ``2h``, ``1h30m``): options, config, alerts.

Kept apart from :mod:`workbooks.core.config` so that reading a duration option costs no
pydantic: ``workbook --help`` builds every command's options (issue 12).
"""

from __future__ import annotations

import re
from datetime import timedelta

from workbooks.core.errors import ConfigError

# Prometheus' duration syntax: 30s, 5m, 2h, 1d, 1w, 1h30m.
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str | timedelta) -> timedelta:
    """``30m``, ``2h``, ``7d``, ``1h30m`` (Prometheus' units: ms s m h d w y) as a timedelta."""
    if isinstance(text, timedelta):
        duration = text
    else:
        value = str(text).strip()
        if not value or _DURATION.sub("", value) != "":
            raise ConfigError(
                f"{text!r} is not a duration; write a number and a unit, such as 30m, 2h, 7d "
                "or 1h30m"
            )
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(value))
        duration = timedelta(seconds=seconds)
    if duration < timedelta(seconds=1):
        raise ConfigError(f"{text!r} is too short: a duration here is at least 1s")
    return duration
