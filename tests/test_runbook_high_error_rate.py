"""high-error-rate's steps on small hand-built frames: burn rates, server or client errors, the
layer that explains the rest, and a burst that is over.

Each incident is the bundled demo's (offline, its recorded window); the query results are built
here, so each test plants one situation and checks what the on-call engineer reads first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbooks.core.config import Config, SLOSettings
from workbooks.core.findings import Finding, ranked
from workbooks.notebook.incident import Incident, QueryResult
from workbooks.runbooks import high_error_rate, high_error_rate_burn

START = pd.Timestamp("2026-11-20 12:10", tz="UTC")  # the demo evidence's recorded window
END = pd.Timestamp("2026-11-20 14:45", tz="UTC")
ONSET = pd.Timestamp("2026-11-20 14:05", tz="UTC")
TIMES = pd.date_range(START, END, freq="60s")


@pytest.fixture(autouse=True)
def _no_evidence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOKS_EVIDENCE_DIR", "off")


def incident(config: Config | None = None) -> Incident:
    return Incident(
        runbook="high-error-rate",
        alert_name="HighErrorRate",
        labels={"service": "svc"},
        starts_at="2026-11-20T14:10:00Z",
        source="demo",
        config=config or Config(),
    )


def shares(
    label: str | None,
    values: dict[str, tuple[float, float]],
    *,
    until: pd.Timestamp | None = None,
    seed: int = 1,
) -> pd.DataFrame:
    """One series per value of ``label``: ``before`` until ONSET, then ``after`` (to ``until``)."""
    rng = np.random.default_rng(seed)
    parts = []
    for value, (before, after) in values.items():
        bad = (ONSET <= TIMES) & ((until > TIMES) if until is not None else True)
        level = np.where(bad, after, before) * (1 + rng.normal(0, 0.03, len(TIMES)))
        frame = pd.DataFrame({"timestamp": TIMES, "value": level})
        parts.append(frame.assign(**{label: value}) if label else frame)
    return pd.concat(parts, ignore_index=True)


def result(
    name: str, label: str | None, values: dict[str, tuple[float, float]], **kw: object
) -> QueryResult:
    window = incident().window
    current = shares(label, values, **kw)  # type: ignore[arg-type]
    baseline = shares(label, {v: (b, b) for v, (b, _) in values.items()}, seed=2)
    return QueryResult(name, name, "hand-built", "ratio", window, 60, current, baseline)


def causes(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.cause is not None]


# --- burn rates -------------------------------------------------------------------------------


def failing(share: float) -> QueryResult:
    """The 5xx share over one window, constant over the incident's window."""
    return result("high_error_rate_over_1h", None, {"": (share, share)})


def test_a_fast_burn_needs_both_the_5m_and_the_1h_rate_above_14_4x() -> None:
    # 99.5%: a budget of 0.5%; 8% of requests failing is a 16x burn.
    paging = high_error_rate_burn.burn_of(
        {"5m": failing(0.08), "1h": failing(0.08)},
        objective=0.995,
        fast=14.4,
        slow=6.0,
    )
    assert paging.rates["1h"] == pytest.approx(16.0, rel=0.1)
    assert paging.severity == "critical"
    assert paging.hours_left == pytest.approx(720 / paging.rates["1h"])

    # A spike in the last 5 minutes that the hour does not confirm does not page.
    spike = high_error_rate_burn.burn_of(
        {"5m": failing(0.08), "1h": failing(0.01)},
        objective=0.995,
        fast=14.4,
        slow=6.0,
    )
    assert spike.severity == "info"


def test_a_slow_burn_is_a_warning_and_a_service_objective_comes_from_the_config() -> None:
    config = Config(slo=SLOSettings(services={"svc": 0.999}))
    case = incident(config)
    # 0.8% failing against a 99.9% objective: an 8x burn everywhere.
    results = {w: failing(0.008) for w in ("5m", "1h", "30m", "6h")}
    high_error_rate.burn_rate(case, results)

    (burn,) = [f for f in case.findings if f.metric == "high_error_rate_over_1h"]
    assert burn.severity == "warning"
    assert burn.title.startswith("Slow burn of the 99.9% SLO")
    assert burn.observed == pytest.approx(8.0, rel=0.15)  # the 1-hour rate, noise aside
    assert "budget lasts" in burn.title


# --- server errors or refused requests --------------------------------------------------------


def test_a_429_surge_with_normal_server_errors_is_named_as_client_traffic() -> None:
    case = incident()
    by_code = result(
        "high_error_rate_by_code",
        "code",
        {"429": (0.002, 0.04), "400": (0.01, 0.01), "500": (0.004, 0.004), "503": (0.001, 0.001)},
    )
    errors = result("error_ratio", None, {"": (0.005, 0.005)})
    high_error_rate.server_or_client(case, by_code, errors, None)

    (cause,) = causes(case.findings)
    assert cause.subject == {"code": "429"}
    assert cause.cause == "traffic"
    assert cause.title.startswith("Not server errors")
    assert "429" in (cause.recommendation or "")


def test_rising_server_errors_are_a_symptom_not_a_cause() -> None:
    case = incident()
    by_code = result(
        "high_error_rate_by_code",
        "code",
        {"503": (0.001, 0.05), "400": (0.01, 0.01), "500": (0.004, 0.004)},
    )
    errors = result("error_ratio", None, {"": (0.005, 0.055)})
    high_error_rate.server_or_client(case, by_code, errors, None)

    assert causes(case.findings) == []
    assert any(f.subject == {"code": "503"} for f in case.findings)


# --- the layer that explains the rest ---------------------------------------------------------


def test_the_failing_upstream_is_named_though_another_always_fails_more() -> None:
    case = incident()
    upstreams = result(
        "high_error_rate_upstreams",
        "upstream",
        {"model-store": (0.04, 0.04), "auth": (0.001, 0.02), "vector-db": (0.003, 0.003)},
    )
    high_error_rate.dependencies(case, upstreams, None)

    (cause,) = causes(case.findings)
    assert cause.subject == {"upstream": "auth"}
    assert cause.cause == "dependency"


def test_a_route_failing_because_of_an_upstream_follows_from_it_and_is_not_a_second_cause() -> None:
    case = incident()
    upstreams = result(
        "high_error_rate_upstreams",
        "upstream",
        {"auth": (0.001, 0.03), "vector-db": (0.003, 0.003)},
    )
    by_route = result(
        "high_error_rate_by_route",
        "route",
        {"/v1/embed": (0.002, 0.03), "/v1/chat": (0.005, 0.01), "/v1/audio": (0.025, 0.03)},
    )
    by_instance = result(
        "high_error_rate_by_instance", "instance", {f"api-{n}": (0.005, 0.02) for n in range(4)}
    )
    high_error_rate.dependencies(case, upstreams, None)
    high_error_rate.where(case, by_route, by_instance, None)

    top = ranked(case.findings)[0]
    assert top.subject == {"upstream": "auth"}
    (route,) = [f for f in case.findings if "route" in f.subject]
    assert route.cause is None
    assert route.severity == "warning"
    assert route.title.endswith("(follows from the cause above)")


def test_a_failing_modality_names_the_modality_and_the_model_that_serves_it() -> None:
    case = incident()
    by_modality = result(
        "high_error_rate_by_modality",
        "modality",
        {"vision": (0.004, 0.2), "text": (0.004, 0.004), "audio": (0.004, 0.004)},
    )
    by_model = result(
        "high_error_rate_by_model",
        "model",
        {"mm-llm": (0.004, 0.07), "whisper-asr": (0.004, 0.004), "embed-small": (0.004, 0.004)},
    )
    high_error_rate.models(case, by_modality, by_model, None)

    (cause,) = causes(case.findings)
    assert cause.subject == {"modality": "vision", "model": "mm-llm"}
    assert "other modalities" in cause.title


# --- a burst that is over ---------------------------------------------------------------------


def test_a_burst_that_is_over_is_said_plainly_and_the_run_is_quiet() -> None:
    case = incident()
    over = ONSET + pd.Timedelta(minutes=8)
    errors = result("error_ratio", None, {"": (0.005, 0.06)}, until=over)
    by_code = result("high_error_rate_by_code", "code", {"503": (0.001, 0.05)}, until=over)
    high_error_rate.still_happening(case, by_code)
    high_error_rate.overview(case, errors, by_code)
    high_error_rate.resolution(case)

    top = ranked(case.findings)[0]
    assert top.title.startswith("A quiet run")
    assert not [f for f in case.findings if f.severity == "critical"]
    (burst,) = [f for f in case.findings if f.title.startswith("A burst that is over")]
    assert burst.severity == "info"
