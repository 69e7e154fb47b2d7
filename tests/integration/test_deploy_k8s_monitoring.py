"""deploy/k8s/monitoring renders with the real kustomize: the PrometheusRule and PodMonitor in the app's
namespace, and the dashboard in a ConfigMap the Grafana sidecar picks up, byte for byte the committed JSON.
(The rules themselves are checked by promtool: tests/unit/test_monitoring_rules.py.) No cluster is needed."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_deploy_k8s import APP_NAMESPACE, K8S, kustomize, render  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

MONITORING = K8S / "monitoring"


def test_monitoring_renders_rules_monitor_and_dashboard(kustomize: list[str]) -> None:  # noqa: F811
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render(kustomize, MONITORING)}
    assert set(objects) == {
        ("PrometheusRule", "inferlog"),
        ("PodMonitor", "inferlog"),
        ("ConfigMap", "inferlog-grafana-dashboard"),
    }
    assert {o["metadata"]["namespace"] for o in objects.values()} == {APP_NAMESPACE}
    dashboard = objects[("ConfigMap", "inferlog-grafana-dashboard")]
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    text = dashboard["data"]["grafana-dashboard.json"]
    assert text == (MONITORING / "grafana-dashboard.json").read_text()
    assert json.loads(text)["uid"] == "inferlog-pipeline"
    # the PodMonitor selects the pods of the base and scrapes the ports they name
    monitor = objects[("PodMonitor", "inferlog")]["spec"]
    assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/name": "inferlog"}
    assert {e["port"] for e in monitor["podMetricsEndpoints"]} == {"http", "metrics"}
    assert all(e["honorLabels"] for e in monitor["podMetricsEndpoints"])


def test_the_pods_the_monitor_scrapes_name_those_ports(kustomize: list[str]) -> None:  # noqa: F811
    """Every inferlog container that serves /metrics (its prometheus.io/port annotation) names that port http or
    metrics, so the PodMonitor's endpoints find them all."""
    seen = set()
    for obj in render(kustomize, K8S / "overlays" / "production"):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        template = obj["spec"]["template"]
        port = template["metadata"].get("annotations", {}).get("prometheus.io/port")
        if port is None:
            continue
        assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "inferlog", obj["metadata"]["name"]
        names = {
            p.get("name")
            for c in template["spec"]["containers"]
            for p in c.get("ports", [])
            if str(p["containerPort"]) == port
        }
        assert names & {"http", "metrics"}, f"{obj['metadata']['name']}: port {port} is named {names}"
        seen.add(template["metadata"]["labels"]["app.kubernetes.io/component"])
    assert {"ingest", "streams", "sink-s3", "sink-opensearch"} <= seen
