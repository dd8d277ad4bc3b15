"""accuracy-drop: a new version regresses on one eval set, or one modality drops on every
version alike while an unrelated rollout is under way.

audio-transcribe is always the least accurate eval set, so a workbook must compare with the
baseline.
"""

from __future__ import annotations

import numpy as np

from workbooks.synthetic.scenarios.families import MODEL_INFO, REQUESTS
from workbooks.synthetic.scenarios.fleet import INSTANCES, MODEL, NEW_VERSION, Fleet
from workbooks.synthetic.scenarios.openmetrics import Family, Group, fixed
from workbooks.synthetic.scenarios.scenario import AlertRule, Case, Cause

RUNBOOK = "accuracy-drop"

_ACCURACY = "avg without (model_version) (avg_over_time(model_eval_accuracy$S[30m]{}))"
ALERT = AlertRule(
    alertname="ModelAccuracyDrop",
    severity="critical",
    expr=f"min by (service, model) ({_ACCURACY.format('')} - {_ACCURACY.format(' offset 1d')})"
    " < -0.03",
    summary="Model accuracy dropped on {service}",
    description="An evaluation accuracy of {service} fell more than 3 points below a day earlier.",
)

# eval set -> (modality, normal accuracy)
EVAL_SETS: dict[str, tuple[str, float]] = {
    "general": ("text", 0.86),
    "vision-qa": ("image", 0.81),
    "ocr": ("image", 0.93),
    "audio-transcribe": ("audio", 0.71),
}


def _accuracy(fleet: Fleet) -> list[Group]:
    groups = []
    for version in fleet.versions():
        serving = fleet.serving(version)  # a version is evaluated while any instance serves it
        if not serving.any():
            continue
        for eval_set, (modality, accuracy) in EVAL_SETS.items():
            level = accuracy - fleet.offset(("accuracy", version, eval_set))
            rng = fleet.grid.rng("accuracy", version, eval_set)
            noise = rng.normal(0, 0.004, fleet.grid.times.size)
            values = fixed(np.clip(level + noise, 0.0, 1.0), 5)
            labels = {"model": MODEL, "model_version": version, "eval_set": eval_set}
            groups.append(
                fleet.single("model_eval_accuracy", values, serving, **labels, modality=modality)
            )
    return groups


ACCURACY = Family("model_eval_accuracy", "gauge", "Accuracy on an evaluation set, 0..1.", _accuracy)
FAMILIES = (REQUESTS, MODEL_INFO, ACCURACY)


def _version_regression(fleet: Fleet) -> None:
    s = fleet.scenario
    version = s.affected["model_version"]
    fleet.roll_out(INSTANCES, version)
    fleet.shift(("accuracy", version, s.affected["eval_set"]), s.magnitude)


def _modality_drop(fleet: Fleet) -> None:
    # Something outside the model (a preprocessing change, a broken decoder) hurts one modality,
    # whichever version serves; a rollout five minutes earlier is a red herring.
    s = fleet.scenario
    fleet.roll_out(
        s.affected["instance"].split(","), s.affected["model_version"], minutes_from_onset=-5
    )
    for version in fleet.versions():
        for eval_set, (modality, _) in EVAL_SETS.items():
            if modality == s.affected["modality"]:
                fleet.shift(("accuracy", version, eval_set), s.magnitude * fleet.grid.after)


CAUSES = (
    Cause(
        name="version_regression",
        summary="a new version, rolled out everywhere at onset, is worse on one eval set",
        affected={"model_version": NEW_VERSION, "eval_set": "vision-qa"},
        magnitude=0.06,
        plant=_version_regression,
    ),
    Cause(
        name="modality_drop",
        summary="one modality drops on every version while a version rolls out to some pods",
        affected={"modality": "image", "model_version": NEW_VERSION, "instance": "api-1,api-3"},
        magnitude=0.05,
        plant=_modality_drop,
    ),
    Cause(name="none", summary="nothing changed", affected={}, magnitude=0.0, plant=lambda _: None),
)

LABELS = {
    "eval_set": tuple(EVAL_SETS),
    "modality": tuple(sorted({modality for modality, _ in EVAL_SETS.values()})),
}

DEMO = Case(
    id="demo",
    cause="version_regression",
    seed=9,
    affected={"eval_set": "ocr"},
    expect={"model_version": NEW_VERSION, "eval_set": "ocr"},
)

CASES = (
    Case(
        id="acc-vision",
        cause="version_regression",
        seed=31,
        magnitude=0.06,
        expect={"model_version": NEW_VERSION, "eval_set": "vision-qa"},
    ),
    Case(
        id="acc-ocr",
        cause="version_regression",
        seed=32,
        magnitude=0.04,
        affected={"eval_set": "ocr"},
        expect={"model_version": NEW_VERSION, "eval_set": "ocr"},
    ),
    Case(
        id="acc-general",
        cause="version_regression",
        seed=33,
        magnitude=0.08,
        affected={"eval_set": "general"},
        expect={"model_version": NEW_VERSION, "eval_set": "general"},
    ),
    Case(
        id="acc-modality",
        cause="modality_drop",
        seed=35,
        magnitude=0.05,
        expect={"modality": "image"},
        not_named={"model_version": NEW_VERSION},
    ),
    Case(id="acc-quiet", cause="none", seed=34, expect={}),
)
