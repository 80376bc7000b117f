"""The Grafana dashboard and the Prometheus alert rules: every query parses as PromQL (promql-parser, the
Rust parser's bindings), names only metrics the server exports, and the issue's topics are all there."""

from __future__ import annotations

import json
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

import collab_server.metrics  # noqa: F401  (registers every metric of the server)
from tests.deploy.manifests import K8S, OBSERVABILITY, Resource, find, load_yaml

# Metrics that issues in progress add (loop lag: 13; exports: 11). Until they land, queries may name
# them; anything else must be a metric the server registers.
PENDING_METRICS: set[str] = set()
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's variables, replaced by values of the same type before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "collab", "$pod": ".*"}


def server_metric_names() -> set[str]:
    """Every sample name the server's metrics produce (``_total``, ``_bucket``, ... included)."""
    # prometheus_client has no public listing of registered names; this mapping is what its own
    # duplicate-name check uses.
    return {name for name in REGISTRY._names_to_collectors if name.startswith("collab_")}


def known_metric(name: str) -> bool:
    if name in server_metric_names():
        return True
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return base in PENDING_METRICS or name in PENDING_METRICS


def metrics_in(expr: str) -> set[str]:
    """Parse ``expr`` as PromQL (raises ValueError if it is not) and return the metric names it selects."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    ast = promql_parser.parse(expr)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(ast, visit)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(OBSERVABILITY / "alerts.yaml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_metrics_in_sees_through_a_query_and_refuses_a_broken_one() -> None:
    assert metrics_in('sum by (pod) (rate(collab_connections{pod=~"$pod"}[$__rate_interval]))') == {
        "collab_connections"
    }
    with pytest.raises(ValueError):
        metrics_in("sum(rate(collab_connections[5m])")
    assert not known_metric("collab_no_such_metric")
    assert known_metric("collab_store_commit_seconds_bucket")


def test_dashboard_queries_parse_and_name_only_real_metrics() -> None:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "collab-server"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "namespace", "pod"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    named: set[str] = set()
    for title, expr in dashboard_queries():
        found = metrics_in(expr)
        assert found, f"{title}: no metric in {expr}"
        unknown = {name for name in found if not known_metric(name)}
        assert not unknown, f"{title}: {sorted(unknown)} are not metrics of the server"
        named |= found
    # What the issue asks the dashboard to show.
    for required in (
        "collab_connections", "collab_rooms_loaded", "collab_messages_received_total", "collab_messages_sent_total",
        "collab_loop_lag_seconds_bucket", "collab_store_commit_seconds_bucket", "collab_store_pending_bytes",
        "collab_broker_errors_total", "collab_broker_repairs_total", "collab_export_queue_depth",
        "collab_export_render_seconds_bucket", "collab_export_jobs_total",
    ):
        assert required in named, f"the dashboard does not show {required}"


def test_alert_rules_parse_name_real_metrics_and_cover_the_outages() -> None:
    rules = alert_rules()
    names = set()
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        found = metrics_in(rule["expr"])
        unknown = {name for name in found if not known_metric(name)}
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} are not metrics of the server"
        names.add(rule["alert"])
    assert len(names) == len(rules), "alert names must be unique"
    assert {
        "CollabStoreNotTakingWrites", "CollabBrokerDisconnected", "CollabLoopLagHigh", "CollabExportFailures"
    } <= names


def test_the_prometheus_rule_for_the_operator_carries_the_same_rules(rendered: list[Resource]) -> None:
    rule = find(rendered, "PrometheusRule", "collab-server")
    assert rule["spec"]["groups"] == load_yaml(OBSERVABILITY / "alerts.yaml")["groups"]
    assert "prometheusrule.yaml" in (K8S / "kustomization.yaml").read_text()
