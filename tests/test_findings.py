"""Findings: the contract's shape, worst first, safe markdown, and read back from a notebook."""

from __future__ import annotations

import json
import math
from typing import Any

import nbformat
import numpy as np
import pytest

from workbooks.core.findings import (
    FINDING_MIME,
    SUMMARY_MIME,
    Finding,
    findings_from_notebook,
    format_value,
    ranked,
    summary_markdown,
)

CONTRACT_FIELDS = {
    "severity",
    "title",
    "detail",
    "subject",
    "metric",
    "observed",
    "baseline",
    "unit",
    "recommendation",
}


def finding(severity: str = "warning", title: str = "t", **kw: Any) -> Finding:
    return Finding(severity=severity, title=title, **kw)  # type: ignore[arg-type]


# --- shape ------------------------------------------------------------------------------------


def test_a_finding_carries_every_field_of_the_contract() -> None:
    full = Finding(
        severity="critical",
        title="p99 latency of /v1/vision rose 4.1x (0.24 s → 0.98 s)",
        detail="Only /v1/vision changed; the other routes are within 10% of baseline.",
        subject={"route": "/v1/vision", "model_version": "2.4.0"},
        metric="latency_p99_by_route",
        observed=0.98,
        baseline=0.24,
        unit="seconds",
        recommendation="Roll back model 2.4.0 on the vision route.",
        likely_cause=True,
    )

    data = full.to_dict()

    assert set(data) >= CONTRACT_FIELDS
    assert data["subject"] == {"route": "/v1/vision", "model_version": "2.4.0"}
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("severity", ["error", "CRITICAL", "", "high"])
def test_only_the_three_runbook_severities_are_allowed(severity: str) -> None:
    with pytest.raises(ValueError, match="critical, warning, info"):
        finding(severity)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf")]
)
def test_a_number_that_json_cannot_hold_becomes_none(value: float) -> None:
    made = finding(observed=value, baseline=value)

    assert made.observed is None
    assert made.baseline is None
    assert json.loads(json.dumps(made.to_dict(), allow_nan=False))["observed"] is None


def test_numbers_are_plain_floats_and_subject_values_are_text() -> None:
    made = finding(observed=np.float32(0.5), baseline=3, subject={"instance": 1, 2: "api-2"})

    assert type(made.observed) is float
    assert made.observed == 0.5
    assert type(made.baseline) is float
    assert made.subject == {"instance": "1", "2": "api-2"}
    json.dumps(made.to_dict(), allow_nan=False)  # numpy scalars would not serialise


def test_to_dict_and_from_dict_round_trip_through_json() -> None:
    original = Finding(
        severity="info",
        title="Model 2.4.0 rolled out at 14:05",
        subject={"model_version": "2.4.0"},
        metric="model_versions",
        observed=4.0,
        unit="count",
        likely_cause=True,
    )

    again = Finding.from_dict(json.loads(json.dumps(original.to_dict())))

    assert again == original


def test_from_dict_ignores_fields_it_does_not_know() -> None:
    data = {**finding("critical", "x").to_dict(), "added_by_a_newer_version": 1}

    assert Finding.from_dict(data) == finding("critical", "x")


# --- ranking ----------------------------------------------------------------------------------


def test_ranked_by_severity_then_cause_then_recorded_order() -> None:
    recorded = [
        finding("info", "i1"),
        finding("warning", "w1"),
        finding("critical", "c1-symptom"),
        finding("warning", "w2-cause", likely_cause=True),
        finding("critical", "c2-cause", likely_cause=True),
        finding("info", "i2-cause", likely_cause=True),
        finding("critical", "c3-symptom"),
        finding("warning", "w3"),
    ]

    titles = [f.title for f in ranked(recorded)]

    assert titles == [
        "c2-cause",
        "c1-symptom",
        "c3-symptom",
        "w2-cause",
        "w1",
        "w3",
        "i2-cause",
        "i1",
    ]


def test_ranking_keeps_equal_findings_in_recorded_order_and_leaves_the_input_alone() -> None:
    recorded = [finding("warning", str(n)) for n in range(10)]

    assert [f.title for f in ranked(recorded)] == [str(n) for n in range(10)]
    assert [f.title for f in recorded] == [str(n) for n in range(10)]
    assert ranked([]) == []


# --- markdown ---------------------------------------------------------------------------------


def test_markdown_escapes_html_from_titles_labels_and_details() -> None:
    hostile = finding(
        "critical",
        "<script>alert('title')</script>",
        detail="<img src=x onerror=alert(1)>",
        subject={"<b>route</b>": "<script>alert('label')</script>"},
        recommendation="<iframe src=//evil>",
    )

    text = hostile.to_markdown()

    assert "<script>" not in text
    assert "<img" not in text
    assert "<iframe" not in text
    assert "<b>" not in text
    assert "&lt;script&gt;alert('title')&lt;/script&gt;" in text
    assert "&lt;script&gt;alert('label')&lt;/script&gt;" in text
    assert hostile.mime_bundle()["text/markdown"] == text


def test_markdown_reads_like_the_runbook_text() -> None:
    text = Finding(
        severity="warning",
        title="Memory of api-1 grows 3 GiB per hour",
        detail="Growth began at 14:05.",
        subject={"instance": "api-1"},
        observed=12 * 2**30,
        baseline=5.8 * 2**30,
        unit="bytes",
        recommendation="Restart api-1 and open a leak ticket.",
    ).to_markdown()

    assert text.splitlines()[0] == "**🟠 WARNING: Memory of api-1 grows 3 GiB per hour**"
    assert "*About:* `instance=api-1`" in text
    assert "Growth began at 14:05." in text
    assert "*Observed:* 12.00 GiB · *baseline:* 5.80 GiB" in text
    assert "*Next:* Restart api-1 and open a leak ticket." in text


def test_markdown_leaves_out_what_is_not_known() -> None:
    text = finding("info", "Nothing changed").to_markdown()

    assert text == "**🔵 INFO: Nothing changed**"


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.245, "seconds", "245 ms"),
        (3.8, "seconds", "3.80 s"),
        (512, "bytes", "512 B"),
        (1536, "bytes", "1.50 KiB"),
        (9.5 * 2**30, "bytes", "9.50 GiB"),
        (0.043, "ratio", "4.3%"),
        (87.5, "percent", "87.5%"),
        (12.3456, "per_second", "12.3 per_second"),
        (123456.0, None, "123,456"),
        (0.5, None, "0.5"),
    ],
)
def test_numbers_are_shown_with_their_unit(value: float, unit: str | None, text: str) -> None:
    assert format_value(value, unit) == text


def test_the_bundle_carries_markdown_and_json() -> None:
    made = finding("critical", "x", subject={"route": "/v1/chat"})

    bundle = made.mime_bundle()

    assert set(bundle) == {"text/markdown", FINDING_MIME}
    assert bundle[FINDING_MIME] == made.to_dict()


# --- summary ----------------------------------------------------------------------------------


def test_summary_lists_the_worst_first_up_to_the_limit() -> None:
    recorded = [finding("info", f"info {n}") for n in range(4)]
    recorded += [finding("critical", "down"), finding("warning", "slow")]

    text = summary_markdown(recorded, limit=3)

    lines = text.splitlines()
    assert lines[0] == "## Summary"
    assert lines[2:] == [
        "- 🔴 **critical**: down",
        "- 🟠 **warning**: slow",
        "- 🔵 **info**: info 0",
        "- … and 3 more below",
    ]


def test_summary_without_a_tail_when_everything_fits() -> None:
    text = summary_markdown([finding("warning", "a"), finding("warning", "b")], limit=2)

    assert "more below" not in text
    assert text.count("\n- ") == 2


def test_summary_of_nothing_says_so() -> None:
    assert summary_markdown([]) == "## Summary\n\nNo findings were recorded."
    assert summary_markdown([], heading="Findings").startswith("## Findings")


def test_summary_escapes_titles() -> None:
    text = summary_markdown([finding("critical", "<script>x</script> on /v1/chat")])

    assert "<script>" not in text
    assert "&lt;script&gt;x&lt;/script&gt; on /v1/chat" in text


# --- read back from a notebook ------------------------------------------------------------------


def _notebook() -> dict[str, Any]:
    first = finding("warning", "first", subject={"route": "/v1/chat"}, observed=1.5)
    second = finding("critical", "second", likely_cause=True)
    third = finding("info", "third")
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# Investigation"},
            {
                "cell_type": "code",
                "id": "a",
                "metadata": {},
                "execution_count": 1,
                "source": "incident.query(...)",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "hello\n"},
                    {"output_type": "display_data", "metadata": {}, "data": first.mime_bundle()},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"text/markdown": "<details>query</details>"},
                    },
                ],
            },
            {
                "cell_type": "code",
                "id": "b",
                "metadata": {},
                "execution_count": 2,
                "source": "analysis()",
                "outputs": [
                    {
                        "output_type": "execute_result",
                        "execution_count": 2,
                        "metadata": {},
                        "data": second.mime_bundle(),
                    },
                    {"output_type": "display_data", "metadata": {}, "data": third.mime_bundle()},
                ],
            },
            {
                "cell_type": "code",
                "id": "c",
                "metadata": {},
                "execution_count": 3,
                "source": "incident.summary()",
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "text/markdown": summary_markdown([first, second, third]),
                            SUMMARY_MIME: [f.to_dict() for f in ranked([first, second, third])],
                        },
                    }
                ],
            },
            {
                "cell_type": "code",
                "id": "d",
                "metadata": {},
                "execution_count": None,
                "source": "",
                "outputs": [],
            },
        ],
    }


def test_findings_are_read_back_in_recorded_order_and_the_summary_is_not_counted() -> None:
    found = findings_from_notebook(_notebook())

    assert [f.title for f in found] == ["first", "second", "third"]
    assert found[0].subject == {"route": "/v1/chat"}
    assert found[0].observed == 1.5
    assert found[1].likely_cause is True


def test_findings_survive_writing_and_reading_the_notebook_file(tmp_path) -> None:
    path = tmp_path / "executed.ipynb"
    notebook = nbformat.from_dict(_notebook())
    nbformat.validate(notebook)
    nbformat.write(notebook, path)

    found = findings_from_notebook(nbformat.read(path, as_version=4))

    assert found == findings_from_notebook(_notebook())


def test_a_notebook_without_findings_gives_none() -> None:
    assert findings_from_notebook({"cells": []}) == []
    assert findings_from_notebook({}) == []


# --- contract version 2: list subjects, cause kinds ------------------------------------------


def test_a_subject_shared_by_several_values_is_a_list() -> None:
    made = finding(subject={"instance": ("api-1", "api-3"), "model_version": "2.4.0"})

    assert made.subject == {"instance": ["api-1", "api-3"], "model_version": "2.4.0"}
    assert made.subject_values("instance") == ["api-1", "api-3"]
    assert made.subject_values("model_version") == ["2.4.0"]
    assert "`instance=api-1, api-3`" in made.to_markdown()
    assert json.loads(json.dumps(made.to_dict()))["subject"]["instance"] == ["api-1", "api-3"]


def test_a_one_value_list_reads_as_its_string() -> None:
    assert finding(subject={"route": ["/v1/chat"]}).subject == {"route": "/v1/chat"}


def test_a_cause_has_a_kind_and_likely_cause_follows_it() -> None:
    cause = finding(cause="rollout")
    symptom = finding()

    assert cause.to_dict()["likely_cause"] is True and cause.to_dict()["cause"] == "rollout"
    assert symptom.to_dict()["likely_cause"] is False and symptom.cause is None
    assert ranked([symptom, cause])[0] is cause


def test_an_unknown_cause_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(ValueError, match="rollout, traffic, instance"):
        finding(cause="gremlins")


def test_the_json_carries_the_contract_version() -> None:
    assert finding().to_dict()["schema"] == 2
    assert finding().mime_bundle()[FINDING_MIME]["schema"] == 2


def test_a_version_1_finding_reads_back_with_an_unknown_cause() -> None:
    old = {
        "severity": "critical",
        "title": "p99 of api-1, api-3 tripled",
        "subject": {"instance": "api-1, api-3"},
        "likely_cause": True,
    }

    read = Finding.from_dict(old)

    assert read.cause == "unknown" and read.likely_cause
    assert read.subject == {"instance": "api-1, api-3"}
    assert Finding.from_dict(read.to_dict()) == read
