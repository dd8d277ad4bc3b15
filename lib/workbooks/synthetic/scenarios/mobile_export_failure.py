"""mobile-export-failure: the model export pipeline converting `mm-llm` for four mobile targets.

The pipeline (a CI job pushing to a Pushgateway, so its series carry the push `job` and no
`service`) re-exports the shipped version 2.3.1 for tflite, coreml, onnx and executorch all
the time, and a new version once a cause releases it. One pipeline per case: its `job` is
``<service>-mobile-export``, and the alert carries that `job` and the `model`.

executorch always has the most failures: its runner times out on half of its runs and the
pipeline retries them, so a workbook must compare each target and reason with its own baseline.

Causes: a new version with an op one target cannot convert (a step, every run of that version
on that target); a new version that grows past one target's size budget (the largest artifact is
onnx's, well inside its own budget); a toolchain upgrade on one target breaking every version,
with a harmless model release the same hour; parity drifting past the tolerance on one target
(a ramp, small).
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.fleet import MODEL, NEW_VERSION, OLD_VERSION, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, escape, fixed, ints
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "mobile-export-failure"

ALERT = AlertRule(
    alertname="MobileExportFailure",
    severity="warning",
    expr='sum by (job, model) (increase(mobile_export_runs_total{result="failure"}[1h])) '
    "/ sum by (job, model) (increase(mobile_export_runs_total[1h])) > 1.5 * "
    'sum by (job, model) (increase(mobile_export_runs_total{result="failure"}[1h] offset 1d)) '
    "/ sum by (job, model) (increase(mobile_export_runs_total[1h] offset 1d))",
    summary="Mobile exports of a model fail more than usual ({service} pipeline)",
    description="The share of failed mobile export runs is 1.5x what it was a day earlier.",
    labels={"job": "{service}-mobile-export", "model": MODEL},
)

TARGETS = ("tflite", "coreml", "onnx", "executorch")
MIB = 1024**2
# Runs per hour of one model version on one target; executorch's include the retries of its
# routine timeouts.
RUNS_PER_HOUR = {"tflite": 12.0, "coreml": 12.0, "onnx": 12.0, "executorch": 30.0}
ROUTINE_FAILURES = {
    "tflite": {"timeout": 0.02},
    "coreml": {"conversion_error": 0.02},
    "onnx": {"timeout": 0.01},
    "executorch": {"timeout": 0.5},
}
SIZE_MIB = {"tflite": 170.0, "coreml": 185.0, "onnx": 340.0, "executorch": 180.0}
BUDGET_MIB = {"tflite": 256.0, "coreml": 224.0, "onnx": 512.0, "executorch": 256.0}
GROWTH = {OLD_VERSION: 1.0, NEW_VERSION: 1.03}  # a new version is a little larger
PARITY = {"tflite": 2e-3, "coreml": 8e-4, "onnx": 2e-5, "executorch": 1.5e-3}
PARITY_TOLERANCE = 0.01  # the pipeline fails an export whose parity error is above it
TOOLCHAINS = {
    "tflite": ("ai-edge-torch", "0.2.0", "0.3.0"),
    "coreml": ("coremltools", "7.2", "8.0"),
    "onnx": ("torch.onnx", "2.4.1", "2.5.0"),
    "executorch": ("executorch", "0.3.0", "0.4.0"),
}
NEW_OP = "aten::_scaled_dot_product_flash_attention"
# An op executorch once could not convert, fixed long ago: its counter stays where it was.
OLD_OP = ("executorch", OLD_VERSION, "aten::upsample_bicubic2d", 3)
PIPELINE = "pipeline"  # the key a release is recorded under in the fleet's rollouts


def _name(fleet: Fleet, name: str, **labels: str) -> str:
    pairs = {"job": f"{fleet.service}-mobile-export", **labels}
    return name + "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}"


def _versions(fleet: Fleet) -> dict[str, np.ndarray]:
    """Each version the pipeline exports, and when (2.3.1 always, a release from its time)."""
    found = {OLD_VERSION: np.ones(fleet.grid.times.size, dtype=bool)}
    release = fleet.rollouts.get(PIPELINE)
    if release is not None:
        found[release.version] = fleet.grid.since(release.at)
    return found


def _size(fleet: Fleet, target: str, version: str) -> np.ndarray:
    noise = fleet.grid.noise(0.002, "size", target, version)
    return (
        SIZE_MIB[target] * MIB * GROWTH.get(version, 1.03) * fleet.factor(("size", version)) * noise
    )


def _parity(fleet: Fleet, target: str, version: str) -> np.ndarray:
    noise = fleet.grid.noise(0.1, "parity", target, version)
    return PARITY[target] * noise + fleet.offset(("parity", target, version))


def _shares(fleet: Fleet, target: str, version: str) -> dict[str, np.ndarray]:
    """Share of runs failing per reason; the rest succeed. Timeouts strike first."""
    size = fleet.grid.times.size
    routine = {r: np.full(size, s) for r, s in ROUTINE_FAILURES[target].items()}
    left = 1 - sum(routine.values())
    broken = np.clip(fleet.offset(("toolchain_broken", target)), 0, 1)
    unsupported = np.clip(fleet.offset(("unsupported", target, version)), 0, 1) * (1 - broken)
    converted = (1 - broken) * (1 - unsupported)
    over = (_size(fleet, target, version) > BUDGET_MIB[target] * MIB) * converted
    parity = (_parity(fleet, target, version) > PARITY_TOLERANCE) * converted * (1 - over)
    caused = {
        "conversion_error": broken,
        "unsupported_op": unsupported,
        "size_budget": over,
        "parity_mismatch": parity,
    }
    shares = dict(routine)
    for reason, share in caused.items():
        shares[reason] = shares.get(reason, 0.0) + left * share
    return shares


def _runs(fleet: Fleet) -> list[Group]:
    groups = []
    started = fleet.grid.first - 3600
    for version, mask in _versions(fleet).items():
        for target in TARGETS:
            rate = RUNS_PER_HOUR[target] / 3600 * fleet.grid.noise(0.1, "runs", target, version)
            rate = np.where(mask, rate, 0.0)
            shares = _shares(fleet, target, version)
            base = {"model": MODEL, "model_version": version, "target": target}
            series = {
                _name(fleet, "mobile_export_runs_total", **base, result="success"): fixed(
                    fleet.grid.counter(rate * (1 - sum(shares.values())), started), 2
                )
            }
            for reason, share in shares.items():
                name = _name(
                    fleet, "mobile_export_runs_total", **base, result="failure", reason=reason
                )
                series[name] = fixed(fleet.grid.counter(rate * share, started), 2)
            groups.append(fleet.group(series, mask))
    return groups


def _unsupported_ops(fleet: Fleet) -> list[Group]:
    target, version, op, count = OLD_OP
    labels = {"model": MODEL, "model_version": version, "target": target, "op": op}
    constant = [str(count)] * fleet.grid.times.size
    groups = [
        fleet.group({_name(fleet, "mobile_export_unsupported_ops_total", **labels): constant})
    ]
    for version, mask in _versions(fleet).items():
        for target in TARGETS:
            share = fleet.offset(("unsupported", target, version))
            if not share.any():
                continue
            rate = RUNS_PER_HOUR[target] / 3600 * np.clip(share, 0, 1)
            labels = {"model": MODEL, "model_version": version, "target": target, "op": NEW_OP}
            name = _name(fleet, "mobile_export_unsupported_ops_total", **labels)
            counter = fleet.grid.counter(np.where(mask, rate, 0.0), fleet.grid.first)
            groups.append(fleet.group({name: fixed(counter, 2)}, mask))
    return groups


def _artifacts(fleet: Fleet) -> list[Group]:
    groups = []
    for version, mask in _versions(fleet).items():
        for target in TARGETS:
            labels = {"model": MODEL, "model_version": version, "target": target}
            size = _name(fleet, "mobile_export_artifact_bytes", **labels)
            groups.append(fleet.group({size: ints(_size(fleet, target, version))}, mask))
    return groups


def _budgets(fleet: Fleet) -> list[Group]:
    return [
        fleet.group(
            {
                _name(fleet, "mobile_export_artifact_budget_bytes", target=target): [
                    str(int(BUDGET_MIB[target] * MIB))
                ]
                * fleet.grid.times.size
            }
        )
        for target in TARGETS
    ]


def _parity_errors(fleet: Fleet) -> list[Group]:
    groups = []
    for version, mask in _versions(fleet).items():
        for target in TARGETS:
            labels = {"model": MODEL, "model_version": version, "target": target}
            name = _name(fleet, "mobile_export_parity_max_abs_error", **labels)
            groups.append(fleet.group({name: fixed(_parity(fleet, target, version), 6)}, mask))
    return groups


def _toolchains(fleet: Fleet) -> list[Group]:
    groups = []
    for target, (toolchain, old, new) in TOOLCHAINS.items():
        upgraded = fleet.offset(("toolchain", target)) > 0
        for version, mask in ((old, ~upgraded), (new, upgraded)):
            if not mask.any():
                continue
            labels = {"target": target, "toolchain": toolchain, "toolchain_version": version}
            name = _name(fleet, "mobile_export_toolchain_info", **labels)
            groups.append(fleet.group({name: ["1"] * fleet.grid.times.size}, mask))
    return groups


RUNS = Family("mobile_export_runs", "counter", "Export runs by result and reason.", _runs)
UNSUPPORTED_OPS = Family(
    "mobile_export_unsupported_ops", "counter", "Ops a target could not convert.", _unsupported_ops
)
ARTIFACT_BYTES = Family(
    "mobile_export_artifact_bytes", "gauge", "Size of the exported artifact.", _artifacts
)
BUDGET_BYTES = Family(
    "mobile_export_artifact_budget_bytes", "gauge", "Size budget of a target.", _budgets
)
PARITY_ERROR = Family(
    "mobile_export_parity_max_abs_error",
    "gauge",
    "Largest absolute difference from the reference outputs.",
    _parity_errors,
)
TOOLCHAIN_INFO = Family(
    "mobile_export_toolchain_info", "gauge", "1 while this toolchain is in use.", _toolchains
)
FAMILIES = (RUNS, UNSUPPORTED_OPS, ARTIFACT_BYTES, BUDGET_BYTES, PARITY_ERROR, TOOLCHAIN_INFO)


def _release(fleet: Fleet, minutes_from_onset: float = 0.0) -> str:
    version = fleet.scenario.affected.get("model_version", NEW_VERSION)
    fleet.roll_out((PIPELINE,), version, minutes_from_onset=minutes_from_onset)
    return version


def _new_op(fleet: Fleet) -> None:
    s = fleet.scenario
    version = _release(fleet)
    fleet.shift(("unsupported", s.affected["target"], version), fleet.after_onset(s.magnitude, 0))


def _size_budget(fleet: Fleet) -> None:
    _release(fleet)
    fleet.scale(("size", fleet.scenario.affected["model_version"]), fleet.scenario.magnitude)


def _toolchain_upgrade(fleet: Fleet) -> None:
    s = fleet.scenario
    # A model release the same hour, ten minutes before the toolchain changes: not the cause.
    _release(fleet, minutes_from_onset=-10)
    fleet.shift(("toolchain", s.affected["target"]), fleet.after_onset(1.0, 0.0))
    fleet.shift(("toolchain_broken", s.affected["target"]), fleet.after_onset(s.magnitude, 0.0))


def _parity_drift(fleet: Fleet) -> None:
    s = fleet.scenario
    # A ramp that crosses the pipeline's tolerance at onset and reaches `magnitude` at the end.
    slope = (s.magnitude - PARITY_TOLERANCE) / (s.end.timestamp() - fleet.grid.onset)
    start = fleet.grid.onset - PARITY_TOLERANCE / slope
    ramp = PARITY_TOLERANCE + slope * (fleet.grid.times - fleet.grid.onset)
    fleet.shift(("parity", s.affected["target"], OLD_VERSION), ramp * fleet.grid.since(start))


CAUSES = (
    Cause(
        name="new_op",
        summary="a new version uses an op one target cannot convert",
        affected={"model_version": NEW_VERSION, "target": "tflite"},
        magnitude=1.0,
        plant=_new_op,
    ),
    Cause(
        name="size_budget",
        summary="a new version grows past one target's size budget",
        affected={"model_version": NEW_VERSION},
        magnitude=1.3,
        plant=_size_budget,
    ),
    Cause(
        name="toolchain_upgrade",
        summary="a toolchain upgrade on one target breaks every version, beside a release",
        affected={"model_version": NEW_VERSION, "target": "onnx"},
        magnitude=1.0,
        plant=_toolchain_upgrade,
    ),
    Cause(
        name="parity_drift",
        summary="the parity error of the shipped version drifts past the tolerance on a target",
        affected={"target": "executorch"},
        magnitude=0.02,
        plant=_parity_drift,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=1.0, plant=lambda _: None),
)
LABELS = {"target": set(TARGETS)}

DEMO = Case(
    id="demo",
    cause="new_op",
    seed=7,
    expect={"model_version": NEW_VERSION, "target": "tflite", "op": NEW_OP},
)

CASES = (
    # executorch fails most (routine retried timeouts): the culprit is not the largest count.
    Case(
        id="mex-new-op",
        cause="new_op",
        seed=31,
        expect={"model_version": NEW_VERSION, "target": "tflite", "op": NEW_OP},
    ),
    # Half the runs of the new version hit the op on coreml (one of two configurations).
    Case(
        id="mex-new-op-coreml",
        cause="new_op",
        seed=32,
        magnitude=0.5,
        affected={"target": "coreml"},
        expect={"model_version": NEW_VERSION, "target": "coreml", "op": NEW_OP},
    ),
    # onnx has the largest artifact, within its budget; coreml's is over its own.
    Case(
        id="mex-size-budget",
        cause="size_budget",
        seed=33,
        expect={"target": "coreml", "reason": "size_budget"},
    ),
    # A version released ten minutes earlier is not the cause: every version fails on onnx.
    Case(
        id="mex-toolchain",
        cause="toolchain_upgrade",
        seed=34,
        expect={"target": "onnx", "toolchain_version": "2.5.0"},
        not_named={"model_version": NEW_VERSION},
    ),
    # A small ramp on executorch, the target with the most (routine) failures anyway.
    Case(
        id="mex-parity",
        cause="parity_drift",
        seed=35,
        expect={"target": "executorch", "model_version": OLD_VERSION},
    ),
    # The op breaks 40% of the new version's runs on executorch, the target that fails most
    # anyway: a small rise on top of its routine timeouts.
    Case(
        id="mex-new-op-executorch",
        cause="new_op",
        seed=37,
        magnitude=0.4,
        affected={"target": "executorch"},
        expect={"model_version": NEW_VERSION, "target": "executorch", "op": NEW_OP},
    ),
    # Just over: coreml's artifact 6% above its budget, executorch's at 91% of its own.
    Case(
        id="mex-size-small",
        cause="size_budget",
        seed=38,
        magnitude=1.25,
        expect={"target": "coreml", "reason": "size_budget"},
    ),
    Case(id="mex-quiet", cause="none", seed=36, expect={}),
)
