"""unauthorized-access: its judgements on hand-built frames, its queries on a real Prometheus, and
the security group's escalation contacts in its Escalation cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbooks.authoring.skeleton import parameter_values
from workbooks.core.config import Config
from workbooks.core.contacts import Escalation, GroupEscalation
from workbooks.core.paths import runbook_group
from workbooks.notebook.catalog import Catalog
from workbooks.notebook.incident import Incident
from workbooks.runbooks import unauthorized_access_checks as checks
from workbooks.runbooks.unauthorized_access_deploy import broad
from workbooks.synthetic.lab import prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import CASE_ONSET, runbook

ROOT = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-11-20 13:00", tz="UTC")
TIMES = pd.date_range(START, periods=60, freq="1min")
SINCE = START + pd.Timedelta(minutes=20)


def frame(series: dict[tuple[str, str], np.ndarray]) -> pd.DataFrame:
    """A long frame as sources return it, one series per (client_id, route)."""
    parts = [
        pd.DataFrame({"timestamp": TIMES, "client_id": c, "route": r, "value": values})
        for (c, r), values in series.items()
    ]
    return pd.concat(parts, ignore_index=True)


def level(before: float, after: float, at: int = 20, until: int = 60) -> np.ndarray:
    values = np.full(60, before)
    values[at:until] = after
    return values


# --- a success right after a burst of failures ---------------------------------------------------


def test_a_success_after_a_burst_on_an_admin_route_is_found_first() -> None:
    failures = frame(
        {
            ("ops-console", "/v1/admin/keys"): level(0.0, 0.3, 20, 30),
            ("partner", "/v1/chat"): level(0.0, 0.4, 22, 30),  # a burst on an ordinary route
            ("big-client", "/v1/chat"): np.full(60, 5.0),  # fails a lot, always: no burst
        }
    )
    successes = frame(
        {
            ("ops-console", "/v1/admin/keys"): level(0.1, 0.6, 32),
            ("partner", "/v1/chat"): level(1.0, 2.5, 32),
            ("big-client", "/v1/chat"): level(20.0, 60.0, 32),
        }
    )

    found = checks.find_breaches(failures, successes, since=SINCE)

    assert [(b.client_id, b.route, b.admin) for b in found] == [
        ("ops-console", "/v1/admin/keys", True),
        ("partner", "/v1/chat", False),
    ]
    first = found[0]
    assert first.burst_at == START + pd.Timedelta(minutes=20)
    assert first.success_at >= first.burst_at
    assert first.burst_peak == pytest.approx(0.3)
    assert first.success_normal == pytest.approx(0.1)  # before `since`: no baseline given
    assert first.success_recent == pytest.approx(0.6)


def test_failing_then_succeeding_as_usual_is_no_breach() -> None:
    # A token expired: a burst of failures, a refresh, then the usual successes.
    failures = frame({("ios-app", "/v1/chat"): level(0.01, 2.0, 20, 25)})
    successes = frame({("ios-app", "/v1/chat"): level(9.0, 9.5, 25)})

    assert checks.find_breaches(failures, successes, since=SINCE) == []


def test_a_revoked_key_that_only_fails_is_no_breach() -> None:
    failures = frame({("partner-acme", "/v1/embed"): level(0.02, 20.0)})
    successes = frame({("partner-acme", "/v1/embed"): level(6.0, 0.0)})

    assert checks.find_breaches(failures, successes, since=SINCE) == []


def test_the_baseline_window_sets_the_usual_level_when_there_is_one() -> None:
    failures = frame({("ops-console", "/v1/admin/keys"): level(0.0, 0.3, 20, 30)})
    successes = frame({("ops-console", "/v1/admin/keys"): level(0.1, 0.6, 32)})
    # Against the last hour alone, 0.6/s is six times the usual 0.1/s: a breach ...
    assert len(checks.find_breaches(failures, successes, since=SINCE)) == 1
    # ... but a day earlier this client succeeded at 0.5/s there: 0.6/s is its normal.
    usual = frame({("ops-console", "/v1/admin/keys"): np.full(60, 0.5)})
    found = checks.find_breaches(failures, successes, since=SINCE, successes_baseline=usual)
    assert found == []


def test_admin_routes() -> None:
    assert checks.is_admin("/v1/admin/keys")
    assert checks.is_admin("/internal/flags")
    assert not checks.is_admin("/v1/chat")
    assert not checks.is_admin("/v1/administrators-guide")


# --- who carries the rise ------------------------------------------------------------------------


def table(rows: list[tuple[str, float, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (c, now, base, (now / base) if base else np.nan, now - (base or np.nan))
            for c, now, base in rows
        ],
        columns=["client_id", "current", "baseline", "ratio", "delta"],
    )


def test_one_client_carries_the_rise_even_when_it_was_not_the_largest_before() -> None:
    found = checks.client_share(
        table([("globex", 0.6, 0.6), ("acme", 25.0, 0.07), ("ios", 0.13, 0.12)]),
        increase=25.0,
        moved_ratio=2.0,
    )

    assert found.top_client == "acme"
    assert found.top_delta == pytest.approx(24.93)
    assert checks.share(found.top_delta, found.increase) > 0.99
    assert (found.known, found.known_moved) == (3, 1)


def test_a_client_absent_from_the_baseline_counts_from_zero() -> None:
    found = checks.client_share(
        table([("new-one", 3.0, None), ("ios", 0.13, 0.12)]), increase=3.0, moved_ratio=2.0
    )

    assert found.top_client == "new-one"
    assert (found.top_current, found.top_baseline) == (3.0, 0.0)
    assert found.top_ratio is None
    assert found.known == 1


def test_everyone_failing_alike_is_broad() -> None:
    rows = [(f"client-{k}", 5.0 + k, 0.1) for k in range(6)]
    everyone = checks.client_share(table(rows), increase=35.0, moved_ratio=2.0)
    one = checks.client_share(
        table([("acme", 25.0, 0.1), *[(f"c{k}", 0.1, 0.1) for k in range(5)]]),
        increase=25.0,
        moved_ratio=2.0,
    )

    assert broad(everyone, share=0.66)
    assert not broad(one, share=0.66)
    assert not broad(None, share=0.66)
    assert checks.share(5.0, 0.0) == 0.0


# --- the queries on a real Prometheus ------------------------------------------------------------


@pytest.mark.skipif(not prometheus_available(), reason="needs prometheus and promtool")
def test_new_clients_are_counted_by_the_query_the_workbook_uses(tmp_path: Path) -> None:
    cases = {case.id: case for case in runbook("unauthorized-access").cases}
    chosen = [cases["auth-stuffing"], cases["auth-revoked-key"]]
    catalog = Catalog.load({})
    server = start_prometheus([case.scenario for case in chosen], tmp_path / "prometheus")
    try:
        at = CASE_ONSET + pd.Timedelta(minutes=30)
        before = CASE_ONSET - pd.Timedelta(minutes=30)
        for case, strangers in ((chosen[0], 120), (chosen[1], 0)):
            query = catalog["unauthorized_access_new_clients"].render({"service": f"svc-{case.id}"})
            assert _value(server.query(query, at=at)) == strangers
            assert _value(server.query(query, at=before)) == 0
    finally:
        server.stop()


def _value(result: list[dict[str, Any]]) -> float:
    (sample,) = result
    return float(sample["value"][1])


# --- escalation: a security runbook pages security -----------------------------------------------


SECURITY = GroupEscalation(
    primary="Security on-call", slack="#sec-incidents", pagerduty="sec-oncall"
)


def parameters(runbook_id: str) -> dict[str, Any]:
    notebook = json.loads((ROOT / "notebooks" / f"{runbook_id}.ipynb").read_text(encoding="utf-8"))
    (cell,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    return parameter_values("".join(cell["source"]))


def test_the_runbook_group_is_read_from_the_notebook(tmp_path: Path) -> None:
    notebooks = ROOT / "notebooks"
    assert runbook_group("unauthorized-access", notebooks) == "security"
    assert runbook_group("high-latency", notebooks) == "service"
    assert runbook_group("no-such-runbook", notebooks) is None
    (tmp_path / "broken.ipynb").write_text("{not json", encoding="utf-8")
    assert runbook_group("broken", tmp_path) is None


@pytest.mark.parametrize(
    ("runbook_id", "shown", "not_shown"),
    [
        ("unauthorized-access", ["Security on-call", "#sec-incidents", "sec-oncall"], ["#sre"]),
        ("high-latency", ["SRE on-call", "#sre", "mobile-ml-oncall"], ["Security on-call"]),
    ],
)
def test_the_escalation_cell_shows_the_contacts_of_the_runbook_group(
    runbook_id: str, shown: list[str], not_shown: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = Config(
        escalation=Escalation(primary="SRE on-call", slack="#sre", groups={"security": SECURITY})
    )
    incident = Incident(runbook=runbook_id, config=config, **parameters(runbook_id))
    capsys.readouterr()

    incident.escalation()

    out = capsys.readouterr().out
    for contact in shown:
        assert contact in out
    for contact in not_shown:
        assert contact not in out
    assert "DevOps Team" in out  # the secondary no block replaces
