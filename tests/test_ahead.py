"""A run's queries fetched ahead of its cells (workbooks.notebook.ahead).

What a user sees: the queries of later cells reach Prometheus while earlier cells still work,
each query is sent once, and every cell gets the answer it asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest

from workbooks.notebook import ahead
from workbooks.notebook.ahead import Ahead, expected_queries
from workbooks.running.execution import execute_notebook
from workbooks.synthetic.lab import (
    PrometheusServer,
    Relay,
    prometheus_available,
    relay,
    start_prometheus,
)
from workbooks.synthetic.scenarios import make_scenario

ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)
SERVICE = "svc-ahead"


# --- which queries a notebook asks ----------------------------------------------------------


def test_the_literal_queries_of_the_cells_in_order() -> None:
    cells = [
        'incident = open_incident("high-latency")',
        'p99 = incident.query("latency_p99_by_route")\nrate = incident.query("request_rate")',
        'v = incident.query("model_versions", baseline=False)',
        "q = incident.query('latency_quantile', quantile=0.5, baseline=True)",
    ]

    assert expected_queries(cells) == [
        ("latency_p99_by_route", True, (), ()),
        ("request_rate", True, (), ()),
        ("model_versions", False, (), ()),
        ("latency_quantile", True, (("quantile", 0.5),), ()),
    ]


def test_a_variable_spread_into_the_values_is_named_to_be_read_in_the_kernel() -> None:
    cells = [
        "scope = service_down.scope(incident)\nup = incident.query('up', **scope)",
        "cpu = incident.query('cpu', baseline=False, window='5m', **scope.values)",
    ]

    assert expected_queries(cells) == [
        ("up", True, (), ("scope",)),
        ("cpu", False, (("window", "5m"),), ("scope", "values")),
    ]


def test_a_query_that_a_condition_or_a_loop_may_skip_or_repeat_is_not_expected() -> None:
    cells = [
        'lag = incident.query("a") if wants_replication(incident) else None',
        'if replicas:\n    incident.query("b")\nc = incident.query("c")',
        'for day in days:\n    incident.query("d")',
        'x = y or incident.query("e")',
        'rows = [incident.query("f") for _ in range(2)]',
        'if incident.query("g").empty:\n    pass',  # the condition itself always runs
        'try:\n    h = incident.query("h")\nexcept ValueError:\n    pass',
    ]

    assert [name for name, *_ in expected_queries(cells)] == ["c", "g", "h"]


def test_queries_built_at_run_time_or_by_hand_and_other_query_methods_are_not_expected() -> None:
    cells = [
        "name = 'request_rate'\nr = incident.query(name)",  # a name only the run knows
        "r = incident.query('request_rate', promql='sum(up)')",  # PromQL written by hand
        "r = incident.query('request_rate', quantile=q)",  # a value only the run knows
        "r = incident.query('request_rate', **scopes[0])",
        "r = incident.query('request_rate', **alert_scope(incident))",
        "r = incident.query('request_rate', **a, **b)",
        "rows = frame.query('value > 0')",  # pandas, not the incident
        "%time r = incident.query('request_rate')",  # a magic: not Python
        "r = incident.query('request_rate')\x00",  # not Python either
        "for day in days:\n    incident.query('traffic', days_ago=day)",
    ]

    assert expected_queries(cells) == []


# --- keeping a few fetched ahead -------------------------------------------------------------


class _Fetches:
    """The seam Ahead calls: records what it started, each as one pending answer."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.futures: dict[str, Future[Any]] = {}

    def __call__(self, ready: ahead.Ready) -> tuple[ahead.Fetched, list[Future[Any]]]:
        name, baseline, values = ready
        self.started.append(name + "".join(f",{k}={v}" for k, v in values))
        self.futures[name] = Future()
        return (name, f"q_{name}", baseline), [self.futures[name]]


def test_two_queries_are_fetched_ahead_and_each_answer_goes_to_the_query_asked() -> None:
    fetches = _Fetches()
    queries = Ahead([(name, True, (), ()) for name in "abcd"], fetches)
    queries.top_up()
    assert fetches.started == ["a", "b"]

    assert queries.take("a", ("a", "q_a", True)) == [fetches.futures["a"]]
    assert fetches.started == ["a", "b", "c"]
    assert queries.take("b", ("b", "q_b", False)) is None  # asked without its baseline: not it
    assert queries.take("b", ("b", "q_b", True)) == [fetches.futures["b"]]
    assert fetches.started == ["a", "b", "c", "d"]


def test_a_query_asked_past_others_drops_them_and_an_unexpected_one_changes_nothing() -> None:
    fetches = _Fetches()
    queries = Ahead([(name, True, (), ()) for name in "abcd"], fetches)
    queries.top_up()

    assert queries.take("x", ("x", "q_x", True)) is None
    assert fetches.started == ["a", "b"]
    assert queries.take("b", ("b", "q_b", True)) == [fetches.futures["b"]]
    assert fetches.futures["a"].cancelled()  # passed by: not fetched for nothing
    assert queries.take("a", ("a", "q_a", True)) is None  # asked later: fetched by its cell
    assert fetches.started == ["a", "b", "c", "d"]


def test_a_query_whose_variable_is_not_set_yet_waits_for_it_and_holds_those_after() -> None:
    fetches = _Fetches()
    session: dict[str, dict[str, str]] = {}
    expected = [
        ("a", True, (), ()),
        ("b", True, (("window", "5m"),), ("scope",)),
        ("c", True, (), ()),
    ]
    queries = Ahead(expected, fetches, lambda path: session.get(path[0]))
    queries.top_up()
    assert fetches.started == ["a"]

    session["scope"] = {"service": "api"}  # the cell that asks for "a" set it
    queries.take("a", ("a", "q_a", True))

    assert fetches.started == ["a", "b,service=api,window=5m", "c"]


def test_a_query_asked_in_the_cell_that_set_its_variable_is_fetched_by_that_cell_alone() -> None:
    fetches = _Fetches()
    session: dict[str, dict[str, str]] = {}
    expected = [("b", True, (), ("scope",)), ("c", True, (), ())]
    queries = Ahead(expected, fetches, lambda path: session.get(path[0]))
    queries.top_up()

    session["scope"] = {"service": "api"}
    assert queries.take("b", ("b[service=api]", "q_b", True)) is None

    assert fetches.started == ["c"]  # not "b" a second time


def test_nothing_more_is_fetched_once_the_source_is_down() -> None:
    fetches = _Fetches()
    queries = Ahead([(name, True, (), ()) for name in "abcd"], fetches)
    queries.top_up()

    queries.stop()
    queries.top_up()

    assert fetches.started == ["a", "b"]
    assert fetches.futures["a"].cancelled() and fetches.futures["b"].cancelled()
    assert queries.take("c", ("c", "q_c", True)) is None


# --- a run against a real Prometheus --------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    scenario = make_scenario("high-latency", "slow_route", onset=ONSET, service=SERVICE)
    server = start_prometheus([scenario], tmp_path_factory.mktemp("ahead-prometheus"))
    yield server
    server.stop()


@pytest.fixture
def recorder(prometheus: PrometheusServer) -> Iterator[Relay]:
    with relay(prometheus.url) as server:  # notes when each PromQL expression arrived
        yield server


@pytest.mark.prometheus
def test_a_run_sends_later_cells_queries_while_an_earlier_cell_works(
    tmp_path: Path, recorder: Relay
) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import json, time, workbooks\n"
            f"incident = workbooks.open_incident('high-latency', alert_name='HighLatency', "
            f"labels={{'service': '{SERVICE}'}}, starts_at='2026-11-20T14:10:00Z', "
            f"ends_at='2026-11-20T14:40:00Z', source='{recorder.url}')"
        ),
        nbformat.v4.new_code_cell(
            f"scope = {{'service': '{SERVICE}'}}\ntime.sleep(1.5)  # an earlier cell's analysis"
        ),
        nbformat.v4.new_code_cell('rate = incident.query("request_rate")\ntime.sleep(1.0)'),
        nbformat.v4.new_code_cell(
            'versions = incident.query("model_versions", baseline=False, **scope)'
        ),
        nbformat.v4.new_code_cell(
            "print(json.dumps([len(rate.current), rate.baseline is not None and "
            "len(rate.baseline), len(versions.current), versions.baseline is None, "
            "rate.query, versions.query, [f.title for f in incident.findings]]))"
        ),
    ]
    nbformat.write(notebook, str(tmp_path / "in.ipynb"))

    execution = execute_notebook(
        tmp_path / "in.ipynb",
        tmp_path / "out.ipynb",
        {},
        cwd=tmp_path,
        cell_timeout=60,
        run_timeout=120,
    )

    assert execution.error is None, execution.error
    cells = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4).cells
    output = json.loads(cells[-1].outputs[0]["text"])
    rate_points, rate_baseline, version_points, no_baseline, rate_query, versions_query = output[:6]
    assert rate_points > 0 and rate_baseline > 0 and version_points > 0 and no_baseline
    assert output[6] == []  # no finding: every answer came and held data
    asked = [query for _, query in recorder.arrivals]
    assert sorted(asked) == sorted([rate_query, rate_query, versions_query])  # each sent once

    def started(cell: int) -> float:
        return datetime.fromisoformat(cells[cell].metadata["papermill"]["start_time"]).timestamp()

    # Each came while an earlier cell worked: the literal query from the start, the one with
    # **scope once a cell had set scope and the next query was asked.
    assert all(at < started(2) for at, query in recorder.arrivals if query == rate_query)
    assert all(at < started(3) for at, query in recorder.arrivals if query == versions_query)
