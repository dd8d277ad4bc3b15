"""The query catalog: every default renders and is valid PromQL on a real Prometheus, a label value
cannot break out of its string, and a team's overrides from the config file take effect."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from workbooks.core.config import load_config
from workbooks.core.errors import ConfigError, QueryFailedError
from workbooks.notebook.catalog import Catalog, read_query_files
from workbooks.synthetic.lab import PrometheusServer, prometheus_available, start_prometheus
from workbooks.synthetic.scenarios import make_scenario

ROOT = Path(__file__).resolve().parents[1]
ONSET = datetime(2026, 11, 20, 14, 5, tzinfo=UTC)
SERVICE = "inference-api"
# What an alert may carry for a query to use: a service, or a host's exporter labels.
ALERT_LABELS = {"service": SERVICE, "instance": "node-1:9100", "mountpoint": "/var/log"}
# Values a runbook module derives from the alert's labels before it queries: high-cpu turns a
# service alert or a host alert into escaped matchers for the services, instances and nodes in
# scope, and a rate window; anomalous-traffic reads the same window days earlier; breakdowns
# are bounded by a top-k.
SCOPE = {
    "services": SERVICE,
    "instances": "api-0|api-1",
    "nodes": "node-1:9100",
    "window": "5m",
    "days_ago": "7d",
    "top": "10",
}
# mobile-export-failure selects the export pipeline by its `model` and push `job` (escaped).
SCOPE |= {"model_re": "mm-llm", "job_re": "inference-api-mobile-export"}
# A service name that would end the string, close the selector and add a series if pasted raw.
HOSTILE_SERVICE = 'evil"} or vector(1) or up{a="\\\nx'
ABSENT_HOSTILE_SERVICE = 'nope\\"}) or vector(42) # \n"'
# One PromQL double-quoted string literal, escapes included.
_STRING_LITERAL = r'"((?:[^"\\\n]|\\.)*)"'


def _unquote(literal: str) -> str:
    """A PromQL string literal's value (its escapes are JSON's for \\\\, \\" and \\n)."""
    return json.loads(f'"{literal}"')


# --- a real Prometheus ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not prometheus_available():
        pytest.skip("needs Debian's prometheus and promtool (make system-deps)")
    scenarios = [
        make_scenario("high-latency", "slow_route", onset=ONSET, service=SERVICE),
        make_scenario("accuracy-drop", "none", onset=ONSET, service=HOSTILE_SERVICE),
    ]
    server = start_prometheus(scenarios, tmp_path_factory.mktemp("catalog-prometheus"))
    yield server
    server.stop()


def instant_query(server: PrometheusServer, promql: str) -> tuple[int, dict[str, Any]]:
    """HTTP status and body of an instant query at the scenario's alert time."""
    params = urllib.parse.urlencode({"query": promql, "time": f"{ONSET.timestamp() + 600:.0f}"})
    request = urllib.request.Request(f"{server.url}/api/v1/query?{params}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


# --- defaults ---------------------------------------------------------------------------------


def test_every_default_query_needs_only_the_service_label() -> None:
    catalog = Catalog.load()

    needs = {name: set(catalog[name].placeholders) for name in catalog.names()}

    # latency_quantile is the one query the notebook parameterises itself (quantile=0.99).
    assert needs.pop("latency_quantile") == {"service", "quantile"}
    assert needs
    # Host alerts carry the exporter's labels instead of a service (low-disk-space).
    known = set(ALERT_LABELS) | set(SCOPE)
    assert all(placeholders and placeholders <= known for placeholders in needs.values()), {
        name: placeholders - known for name, placeholders in needs.items() if placeholders - known
    }


def test_every_default_query_renders_with_a_service() -> None:
    catalog = Catalog.load()

    for name in catalog.names():
        rendered = catalog[name].render({**ALERT_LABELS, **SCOPE, "quantile": 0.99})
        # kube-state-metrics names the service as the pod's container, not with a service label.
        selectors = {**ALERT_LABELS, "container": SERVICE}
        selected = [f'{label}="{value}"' for label, value in selectors.items()]
        selected += [f'=~"{value}"' for value in SCOPE.values()]
        assert any(selector in rendered for selector in selected), name
        assert not re.search(r"\{[A-Za-z_][A-Za-z0-9_]*\}", rendered), rendered
        assert "\n" not in rendered  # YAML folding left no line breaks


def test_every_query_a_shipped_notebook_names_is_in_the_catalog() -> None:
    catalog = Catalog.load()
    used: set[str] = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                used |= set(re.findall(r'\.query\(\s*"([a-z0-9_]+)"', "".join(cell["source"])))

    assert used, "no incident.query(...) calls found in notebooks/"
    assert used <= set(catalog.names()), used - set(catalog.names())


def test_titles_fill_their_placeholders_and_keep_unknown_ones() -> None:
    query = Catalog.load()["latency_quantile"]

    assert query.render_title({"percentile": 99}) == "p99 latency"
    assert query.render_title({}) == "p{percentile} latency"
    assert query.unit == "seconds"


@pytest.mark.prometheus
def test_prometheus_accepts_every_rendered_default_query(prometheus: PrometheusServer) -> None:
    catalog = Catalog.load()

    for name in catalog.names():
        rendered = catalog[name].render({**ALERT_LABELS, **SCOPE, "quantile": 0.99})
        status, body = instant_query(prometheus, rendered)
        assert (status, body["status"]) == (200, "success"), (name, rendered, body)


@pytest.mark.prometheus
def test_default_latency_queries_find_the_scenario_data(prometheus: PrometheusServer) -> None:
    catalog = Catalog.load()

    status, body = instant_query(
        prometheus, catalog["latency_p99_by_route"].render({"service": SERVICE})
    )

    assert status == 200
    routes = {series["metric"]["route"] for series in body["data"]["result"]}
    assert routes == {"/v1/chat", "/v1/vision", "/v1/audio", "/v1/embed"}


# --- the query files ---------------------------------------------------------------------------

QUERIES = ROOT / "lib" / "workbooks" / "notebook" / "queries"


def test_each_runbook_has_its_own_queries_file_beside_the_shared_one() -> None:
    files = {path.stem for path in QUERIES.glob("*.yaml")}
    runbooks = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}

    assert files == runbooks | {"common"}
    assert set(read_query_files(QUERIES)) == set(Catalog.load().names())
    shared = yaml_names(QUERIES / "common.yaml")
    assert {"request_rate", "model_versions"} <= shared
    assert "memory_by_instance" in yaml_names(QUERIES / "high-memory.yaml")


def yaml_names(path: Path) -> set[str]:
    return set(yaml.safe_load(path.read_text(encoding="utf-8")))


def test_the_catalog_is_the_union_of_the_files() -> None:
    names = set().union(*(yaml_names(path) for path in QUERIES.glob("*.yaml")))

    assert set(Catalog.load().names()) == names


def test_a_name_defined_in_two_files_names_both(tmp_path: Path) -> None:
    (tmp_path / "common.yaml").write_text("request_rate:\n  query: sum(up)\n", encoding="utf-8")
    (tmp_path / "high-cpu.yaml").write_text(
        "cpu:\n  query: sum(cpu)\nrequest_rate:\n  query: sum(rate(x[5m]))\n", encoding="utf-8"
    )

    with pytest.raises(ConfigError, match="defined twice") as caught:
        Catalog.load(directory=tmp_path)

    assert "queries/common.yaml" in str(caught.value)
    assert "queries/high-cpu.yaml" in str(caught.value)


def test_an_entry_without_a_query_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "high-cpu.yaml").write_text("cpu:\n  title: CPU\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=r"queries/high-cpu.yaml: entry 'cpu' needs a query"):
        Catalog.load(directory=tmp_path)


def test_overrides_apply_on_top_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("cpu:\n  query: sum(cpu)\n  unit: cores\n", encoding="utf-8")

    catalog = Catalog.load({"cpu": "sum(cpu2)"}, directory=tmp_path)

    assert (catalog["cpu"].query, catalog["cpu"].unit) == ("sum(cpu2)", "cores")


def test_the_package_ships_the_query_files() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["workbooks"]
    package = ROOT / "lib" / "workbooks"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}

    assert set(QUERIES.glob("*.yaml")) <= shipped


# --- a label value cannot change the query ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('a"b', id="quote"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("a\nb", id="newline"),
        pytest.param("\\", id="lone-backslash"),
        pytest.param('\\"', id="backslash-quote"),
        pytest.param(HOSTILE_SERVICE, id="selector-breakout"),
        pytest.param("{service}", id="placeholder-lookalike"),
        pytest.param("inférence-api ✓", id="unicode"),
    ],
)
def test_a_label_value_stays_one_string_literal(value: str) -> None:
    template = Catalog.load()["error_ratio"]

    rendered = template.render({"service": value})

    # Cut the two service="..." literals out: what is left is exactly the template's shape.
    literals = re.findall(r"service=" + _STRING_LITERAL, rendered)
    assert [_unquote(literal) for literal in literals] == [value, value]
    skeleton = re.sub(r"service=" + _STRING_LITERAL, 'service="{service}"', rendered)
    assert skeleton == template.query
    assert "\n" not in rendered


@pytest.mark.prometheus
def test_a_hostile_service_value_gives_no_series_not_an_error_or_injection(
    prometheus: PrometheusServer,
) -> None:
    rendered = Catalog.load()["request_rate"].render({"service": ABSENT_HOSTILE_SERVICE})

    status, body = instant_query(prometheus, rendered)

    # Had the value escaped its string, Prometheus would reject the query or `vector(42)` answer.
    assert status == 200, body
    assert body["status"] == "success"
    assert body["data"]["result"] == []


@pytest.mark.prometheus
def test_a_hostile_service_value_selects_exactly_that_service(
    prometheus: PrometheusServer,
) -> None:
    rendered = Catalog.load()["request_rate_by_route"].render({"service": HOSTILE_SERVICE})
    status, body = instant_query(prometheus, rendered)
    assert status == 200, body
    assert len(body["data"]["result"]) == 4  # one per route of that service, nothing injected

    by_service = "sum by (service) (" + rendered.removeprefix("sum by (route) (")
    status, body = instant_query(prometheus, by_service)
    assert status == 200, body
    assert [series["metric"]["service"] for series in body["data"]["result"]] == [HOSTILE_SERVICE]


def test_a_value_outside_a_string_literal_cannot_change_the_query() -> None:
    query = Catalog.load()["latency_quantile"]

    with pytest.raises(QueryFailedError):
        query.render({"service": SERVICE, "quantile": "0.99, vector(1)) or (vector(2)"})


# --- errors -----------------------------------------------------------------------------------


def test_a_missing_placeholder_is_named() -> None:
    query = Catalog.load()["latency_quantile"]

    with pytest.raises(QueryFailedError, match=r"'latency_quantile' needs quantile") as caught:
        query.render({"service": SERVICE})

    assert "incident.query('latency_quantile', quantile=...)" in str(caught.value)


def test_several_missing_placeholders_are_all_named() -> None:
    query = Catalog.load()["latency_quantile"]

    with pytest.raises(QueryFailedError, match=r"needs quantile, service"):
        query.render({})


def test_an_unknown_query_name_lists_the_known_ones() -> None:
    catalog = Catalog.load()

    with pytest.raises(QueryFailedError, match=r"no query named 'latency_p95'") as caught:
        catalog["latency_p95"]

    listed = str(caught.value).split("known: ", 1)[1].split(", ")
    assert listed == catalog.names()
    assert "latency_p99_by_route" in listed


# --- overrides from the config ----------------------------------------------------------------


def test_a_string_override_replaces_the_query_and_keeps_title_and_unit() -> None:
    default = Catalog.load()["memory_by_instance"]

    catalog = Catalog.load(
        {"memory_by_instance": 'max by (pod) (container_memory_working_set_bytes{app="{service}"})'}
    )

    query = catalog["memory_by_instance"]
    assert query.render({"service": "x"}) == (
        'max by (pod) (container_memory_working_set_bytes{app="x"})'
    )
    assert (query.title, query.unit) == (default.title, default.unit)
    # The defaults themselves are untouched for the next load.
    assert Catalog.load()["memory_by_instance"] == default


def test_a_mapping_override_replaces_only_the_fields_it_names() -> None:
    default = Catalog.load()["request_rate"]

    query = Catalog.load({"request_rate": {"title": "traffic", "unit": "rpm"}})["request_rate"]

    assert (query.title, query.unit, query.query) == ("traffic", "rpm", default.query)


def test_a_new_query_can_be_added_with_a_query() -> None:
    catalog = Catalog.load({"gpu_memory": {"query": 'max(gpu_mem{service="{service}"})'}})

    assert "gpu_memory" in catalog
    assert catalog["gpu_memory"].title == "gpu_memory"
    assert catalog["gpu_memory"].render({"service": "s"}) == 'max(gpu_mem{service="s"})'
    assert "gpu_memory" in catalog.names()


@pytest.mark.parametrize(
    ("name", "override", "message"),
    [
        pytest.param("request_rate", ["sum(up)"], "queries.request_rate", id="list"),
        pytest.param("request_rate", 42, "queries.request_rate", id="number"),
        pytest.param("request_rate", None, "queries.request_rate", id="null"),
        pytest.param(
            "request_rate", {"promql": "sum(up)"}, "queries.request_rate", id="unknown-field"
        ),
        pytest.param("brand_new", {"title": "x"}, "queries.brand_new is new", id="new-no-query"),
    ],
)
def test_a_bad_override_is_a_config_error_naming_the_entry(
    name: str, override: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Catalog.load({name: override})


def test_overrides_come_from_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "workbooks.yaml"
    config_file.write_text(
        "queries:\n"
        '  request_rate: sum(rate(requests_total{job="{service}"}[1m]))\n'
        "  error_ratio:\n"
        "    title: failing share\n"
        "    unit: percent\n",
        encoding="utf-8",
    )
    config = load_config(config_file, env={})

    catalog = Catalog.load(config.queries)

    assert catalog["request_rate"].render({"service": "api"}) == (
        'sum(rate(requests_total{job="api"}[1m]))'
    )
    assert (catalog["error_ratio"].title, catalog["error_ratio"].unit) == (
        "failing share",
        "percent",
    )


def test_an_override_can_clear_the_unit() -> None:
    query = Catalog.load({"request_rate": {"unit": None}})["request_rate"]

    assert query.unit is None
