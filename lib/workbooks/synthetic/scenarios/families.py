"""The metric families every instance of the fleet exports, whichever runbook reads them.

A runbook's scenario module lists the ones its workbook reads (beside its own families): only
those are written, since the latency histogram alone is most of a file.
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.fleet import (
    CPU_CORES,
    ERROR_RATIOS,
    INSTANCES,
    MODEL,
    ROUTES,
    Fleet,
)
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed, ints


def _requests(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        for route in ROUTES:
            rate = fleet.request_rate(instance, route)
            error_share = {
                code: share
                * fleet.grid.noise(0.2, "errors", instance, route, code)
                * fleet.factor(("errors", instance, route, code))
                for code, share in ERROR_RATIOS.items()
            }
            shares = {"200": 1 - sum(error_share.values()), **error_share}
            groups += [
                fleet.single(
                    "http_requests_total",
                    ints(fleet.counter(rate * share, instance)),
                    instance=instance,
                    route=route,
                    code=code,
                )
                for code, share in shares.items()
            ]
    return groups


def _model_info(fleet: Fleet) -> list[Group]:
    ones = ["1"] * fleet.grid.times.size
    return [
        fleet.single("model_info", ones, mask, instance=i, model=MODEL, model_version=version)
        for i in INSTANCES
        for version in fleet.versions()
        if (mask := fleet.version_mask(i, version)).any()
    ]


def _build_info(fleet: Fleet) -> list[Group]:
    ones = ["1"] * fleet.grid.times.size
    return [
        fleet.single("build_info", ones, mask, instance=i, version=version)
        for i in INSTANCES
        for version in fleet.builds()
        if (mask := fleet.build_mask(i, version)).any()
    ]


def _cpu(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        cores = CPU_CORES * fleet.grid.traffic * fleet.grid.noise(0.04, "cpu", instance)
        cores *= fleet.factor(("cpu", instance))
        seconds = fixed(fleet.counter(cores, instance), 3)
        groups.append(fleet.single("process_cpu_seconds_total", seconds, instance=instance))
    return groups


def _start_time(fleet: Fleet) -> list[Group]:
    groups = []
    for instance in INSTANCES:
        started = np.full(fleet.grid.times.size, float(fleet.started[instance]))
        restarted = fleet.restarted_at(instance)
        if restarted is not None:
            started[fleet.grid.since(restarted)] = restarted
        groups.append(fleet.single("process_start_time_seconds", ints(started), instance=instance))
    return groups


REQUESTS = Family("http_requests", "counter", "HTTP requests by route and status code.", _requests)
MODEL_INFO = Family("model_info", "gauge", "1 while this model version is loaded.", _model_info)
BUILD_INFO = Family("build_info", "gauge", "1 while this build of the service runs.", _build_info)
CPU = Family("process_cpu_seconds", "counter", "CPU time used by the process.", _cpu)
START_TIME = Family(
    "process_start_time_seconds", "gauge", "Process start, Unix seconds.", _start_time
)
