"""low-disk-space: one host's filesystems, as node_exporter reports them, with one planted cause.

The host runs five filesystems (node_exporter's `node_filesystem_*` families, labelled
`instance, device, mountpoint, fstype`, no `service`). `/data` is always the fullest, by share
and by bytes (88% of 2 TiB, flat), so a workbook that blames the fullest disk is wrong in every
case but none; `/var/log` always grows a little (logs, rotated daily). Causes: a filesystem
filling steadily (logs), a large download (a step), inodes running out while bytes are free, a
read-only remount, and high but flat usage (the quiet control).

Series without a `service` label must still be unique per case: the host is named after the
case's service (`svc-disk-logs-node-1:9100`), and the alert carries that `instance`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from workbooks.synthetic.scenarios.families import MODEL_INFO
from workbooks.synthetic.scenarios.fleet import GIB, INSTANCES, NEW_VERSION, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "low-disk-space"
HOST = "{service}-node-1:9100"


class Disk(NamedTuple):
    device: str
    fstype: str
    size_bytes: float
    used_share: float  # normal share of bytes used
    inodes: float
    inodes_used_share: float
    log_growth_bytes_per_hour: float  # always there (logs), rotated daily


TIB = 1024 * GIB
DISKS: dict[str, Disk] = {
    "/": Disk("/dev/nvme0n1p1", "ext4", 100 * GIB, 0.55, 6.5e6, 0.30, 0.0),
    "/var/log": Disk("/dev/nvme0n1p2", "ext4", 50 * GIB, 0.35, 3.2e6, 0.02, 0.05 * GIB),
    "/var/cache": Disk("/dev/nvme0n1p3", "ext4", 20 * GIB, 0.30, 1.3e6, 0.25, 0.0),
    "/models": Disk("/dev/nvme1n1", "xfs", 500 * GIB, 0.62, 2.5e8, 0.001, 0.0),
    "/data": Disk("/dev/nvme2n1", "xfs", 2 * TIB, 0.88, 1.0e9, 0.05, 0.0),
}

ALERT = AlertRule(
    alertname="LowDiskSpace",
    severity="warning",
    expr="(1 - node_filesystem_avail_bytes / node_filesystem_size_bytes > 0.85)"
    " or predict_linear(node_filesystem_avail_bytes[1h], 24 * 3600) < 0",
    summary="Low disk space on a host of {service}",
    description="A filesystem is more than 85% full or will fill within 24 hours.",
    labels={"instance": HOST, "mountpoint": "{mountpoint}", "device": "{device}"},
)


def host(fleet: Fleet) -> str:
    return HOST.format(service=fleet.service)


def _series(fleet: Fleet, name: str, mountpoint: str, values: list[str]) -> Group:
    disk = DISKS[mountpoint]
    labels = {
        "instance": host(fleet),
        "device": disk.device,
        "mountpoint": mountpoint,
        "fstype": disk.fstype,
    }
    text = ",".join(f'{key}="{escape(value)}"' for key, value in labels.items())
    return fleet.group({f"{name}{{{text}}}": values})


def _used_bytes(fleet: Fleet, mountpoint: str) -> np.ndarray:
    disk = DISKS[mountpoint]
    hours_into_day = (fleet.grid.times % 86400) / 3600  # rotated at midnight UTC
    used = disk.used_share * disk.size_bytes + disk.log_growth_bytes_per_hour * hours_into_day
    jitter = fleet.grid.rng("disk", mountpoint).normal(0.0, 0.0005, fleet.grid.times.size)
    used = used + jitter * disk.size_bytes + fleet.offset(("used", mountpoint))
    return np.clip(used, 0.0, disk.size_bytes)


def _avail(fleet: Fleet) -> list[Group]:
    return [
        _series(fleet, "node_filesystem_avail_bytes", mp, ints(disk.size_bytes - used))
        for mp, disk in DISKS.items()
        for used in [_used_bytes(fleet, mp)]
    ]


def _size(fleet: Fleet) -> list[Group]:
    count = fleet.grid.times.size
    return [
        _series(fleet, "node_filesystem_size_bytes", mp, [str(int(disk.size_bytes))] * count)
        for mp, disk in DISKS.items()
    ]


def _files_free(fleet: Fleet) -> list[Group]:
    groups = []
    for mountpoint, disk in DISKS.items():
        jitter = fleet.grid.rng("inodes", mountpoint).normal(0.0, 0.0005, fleet.grid.times.size)
        used = disk.inodes * (disk.inodes_used_share + jitter)
        used = used + fleet.offset(("inodes", mountpoint))
        free = np.clip(disk.inodes - used, 0.0, disk.inodes)
        groups.append(_series(fleet, "node_filesystem_files_free", mountpoint, ints(free)))
    return groups


def _files(fleet: Fleet) -> list[Group]:
    count = fleet.grid.times.size
    return [
        _series(fleet, "node_filesystem_files", mp, [str(int(disk.inodes))] * count)
        for mp, disk in DISKS.items()
    ]


def _readonly(fleet: Fleet) -> list[Group]:
    return [
        _series(fleet, "node_filesystem_readonly", mp, ints(fleet.offset(("readonly", mp))))
        for mp in DISKS
    ]


AVAIL = Family(
    "node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users.", _avail
)
SIZE = Family("node_filesystem_size_bytes", "gauge", "Filesystem size in bytes.", _size)
FILES_FREE = Family(
    "node_filesystem_files_free", "gauge", "Filesystem total free file nodes.", _files_free
)
FILES = Family("node_filesystem_files", "gauge", "Filesystem total file nodes.", _files)
READONLY = Family("node_filesystem_readonly", "gauge", "Filesystem read-only status.", _readonly)
FAMILIES = (AVAIL, SIZE, FILES_FREE, FILES, READONLY, MODEL_INFO)


def _disk(fleet: Fleet) -> str:
    s = fleet.scenario
    mountpoint = s.affected["mountpoint"]
    if DISKS[mountpoint].device != s.affected["device"]:
        device = DISKS[mountpoint].device
        raise ValueError(f"{mountpoint} is on {device}, not {s.affected['device']}")
    return mountpoint


def _filling(fleet: Fleet) -> None:
    # Steady growth from onset (a log level left at debug): `magnitude` GiB per hour.
    mountpoint = _disk(fleet)
    fleet.shift(("used", mountpoint), fleet.scenario.magnitude * GIB * fleet.grid.hours_after)


def _download(fleet: Fleet) -> None:
    # A new model version is rolled out and its weights (`magnitude` GiB) land in the cache
    # two minutes later, in one go; nothing grows afterwards.
    mountpoint = _disk(fleet)
    fleet.roll_out(INSTANCES, NEW_VERSION, minutes_from_onset=-2)
    fleet.shift(("used", mountpoint), fleet.scenario.magnitude * GIB * fleet.grid.after)


def _filling_after_rollout(fleet: Fleet) -> None:
    # The change everyone sees: a rollout 30 minutes before and its 40 GiB download on
    # /models, which is then flat. The cause: logs filling from onset.
    fleet.roll_out(INSTANCES, NEW_VERSION, minutes_from_onset=-30)
    fleet.shift(("used", "/models"), 40 * GIB * fleet.grid.since(fleet.grid.onset - 28 * 60))
    _filling(fleet)


def _inodes(fleet: Fleet) -> None:
    # Millions of tiny files (a cache that is never pruned): inodes run out, bytes barely move.
    mountpoint = _disk(fleet)
    disk = DISKS[mountpoint]
    per_hour = fleet.scenario.magnitude * disk.inodes
    fleet.shift(("inodes", mountpoint), per_hour * fleet.grid.hours_after)
    fleet.shift(("used", mountpoint), 0.3 * GIB * fleet.grid.hours_after)


def _readonly_remount(fleet: Fleet) -> None:
    # The kernel remounted the filesystem read-only after I/O errors: space is unchanged.
    fleet.shift(("readonly", _disk(fleet)), fleet.after_onset(1.0, before=0.0))


def _flat_high(fleet: Fleet) -> None:
    # Full for weeks, as in its baseline: the alert's threshold is below where it lives.
    mountpoint = _disk(fleet)
    disk = DISKS[mountpoint]
    extra = (fleet.scenario.magnitude - disk.used_share) * disk.size_bytes
    fleet.shift(("used", mountpoint), extra)


CAUSES = (
    Cause(
        name="filling",
        summary="one filesystem fills steadily from onset (GiB per hour)",
        affected={"mountpoint": "/var/log", "device": DISKS["/var/log"].device},
        magnitude=8.0,
        plant=_filling,
    ),
    Cause(
        name="download",
        summary="a model rollout downloads its weights into the cache in one step (GiB)",
        affected={"mountpoint": "/models", "device": DISKS["/models"].device},
        magnitude=180.0,
        plant=_download,
    ),
    Cause(
        name="filling_after_rollout",
        summary="logs fill from onset, 30 min after a rollout and its download on /models",
        affected={"mountpoint": "/var/log", "device": DISKS["/var/log"].device},
        magnitude=5.0,
        plant=_filling_after_rollout,
    ),
    Cause(
        name="inodes",
        summary="inodes run out while bytes are free (share of the inodes per hour)",
        affected={"mountpoint": "/var/cache", "device": DISKS["/var/cache"].device},
        magnitude=1.0,
        plant=_inodes,
    ),
    Cause(
        name="readonly",
        summary="the filesystem is remounted read-only at onset",
        affected={"mountpoint": "/", "device": DISKS["/"].device},
        magnitude=1.0,
        plant=_readonly_remount,
    ),
    # Nothing at all (the shared scenario tests compare every cause with it before onset).
    Cause(
        name="none",
        summary="nothing changed",
        affected={"mountpoint": "/", "device": DISKS["/"].device},
        magnitude=0.0,
        plant=lambda _: None,
    ),
    Cause(
        name="flat_high",
        summary="high but flat usage, as in the baseline (the share used)",
        affected={"mountpoint": "/", "device": DISKS["/"].device},
        magnitude=0.87,
        plant=_flat_high,
    ),
)

LABELS = {"mountpoint": tuple(DISKS), "device": tuple(disk.device for disk in DISKS.values())}

DEMO = Case(
    id="demo",
    cause="filling",
    seed=8,
    expect={"mountpoint": "/var/log", "instance": "inference-api-node-1:9100"},
)


def _on(case_id: str, mountpoint: str) -> dict[str, str]:
    return {"mountpoint": mountpoint, "instance": f"svc-{case_id}-node-1:9100"}


CASES = (
    # /var/log fills; /data is fuller by share and by bytes, and flat.
    Case(id="disk-logs", cause="filling", seed=31, expect=_on("disk-logs", "/var/log")),
    Case(id="disk-download", cause="download", seed=32, expect=_on("disk-download", "/models")),
    Case(id="disk-inodes", cause="inodes", seed=33, expect=_on("disk-inodes", "/var/cache")),
    Case(id="disk-readonly", cause="readonly", seed=34, expect=_on("disk-readonly", "/")),
    # A rollout and its download 30 min before: seen, not blamed.
    Case(
        id="disk-logs-rollout",
        cause="filling_after_rollout",
        seed=35,
        expect=_on("disk-logs-rollout", "/var/log"),
        not_named={"mountpoint": "/models", "model_version": NEW_VERSION},
    ),
    Case(id="disk-quiet", cause="flat_high", seed=36, expect={}),
)
