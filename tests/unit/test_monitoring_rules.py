"""deploy/k8s/monitoring: the PrometheusRule, the Grafana dashboard and their promtool checks.

Without promtool: every metric, label and stage that an alert or a dashboard query reads is one the code
registers (a renamed metric fails here), each alert carries for/severity/summary/description/runbook and is
tested by promtool both firing and not firing, and the dashboard's panels are well-formed.

With promtool (``check.sh``: a pinned build cached in ``~/.cache/inferlog/``, made once from the Go module
proxy, else ``PROMTOOL``): ``promtool check rules`` on the rules and the dashboard's queries and ``promtool
test rules`` on tests/alerts.test.yaml, and a rule changed against its tests makes ``test rules`` fail.
Skipped, saying why, when there is neither a promtool nor a Go toolchain to build one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from core import metrics as pipeline

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
CHECK = MONITORING / "check.sh"
# Labels the scrape adds (Prometheus Operator PodMonitor), besides the ones each metric exports.
SCRAPE_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}
SEVERITIES = {"warning", "critical"}
# Every package of a process that exports metrics: all their modules are imported, so a metric defined in any
# of them is known wherever it moves.
PACKAGES = ("core", "ingest", "streams", "sinks")


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_render", MONITORING / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


# ------------------------------------------------------------------------------------------- what the code has


def _exported() -> dict[str, tuple[str, set[str]]]:
    """Every exported sample name → (metric type, label names), from the metrics the packages register."""
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            importlib.import_module(info.name)
    from sinks import registry

    registry.specs()  # each sink declares its pipeline stage when it is registered
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("",)}
    out: dict[str, tuple[str, set[str]]] = {}
    collectors = {c for c in REGISTRY._collector_to_names if isinstance(c, MetricWrapperBase)}
    for collector in collectors:
        for family in collector.describe():
            for suffix in suffixes.get(family.type, ("",)):
                out[family.name + suffix] = (family.type, set(collector._labelnames))
    return out


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[str, set[str]]]:
    found = _exported()
    assert "inferlog_pipeline_events_total" in found and "inferlog_sink_lag" in found  # the walk found them
    return found


@pytest.fixture(scope="module")
def groups() -> dict[str, Any]:
    return dict(render.rule_groups(render.prometheus_rule()))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(render.dashboard())


def _exprs(groups: dict[str, Any], dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        *[(f"rule {name}", expr) for name, expr in render.rule_exprs(groups)],
        *[(f"dashboard {where}", expr) for where, expr in render.dashboard_queries(dashboard)],
    ]


def test_every_metric_label_and_stage_read_is_exported(
    exported: dict[str, tuple[str, set[str]]], groups: dict[str, Any], dashboard: dict[str, Any]
) -> None:
    problems: list[str] = []
    read: set[str] = set()
    for where, expr in _exprs(groups, dashboard):
        names = render.metric_names(expr)
        read |= names
        problems += [f"{where}: no metric {name}" for name in sorted(names - exported.keys())]
        for name, matchers in render.selectors(expr):
            if name not in exported:
                continue
            labels = exported[name][1] | SCRAPE_LABELS
            for label, (op, value) in matchers.items():
                if label not in labels:
                    problems.append(f"{where}: {name} has no label {label}")
                elif label == "stage" and op in ("=", "=~") and "$" not in value:
                    problems += [
                        f"{where}: no pipeline stage {stage!r}"
                        for stage in value.split("|")
                        if stage not in pipeline.STAGES
                    ]
        # by (...) / without (...): labels of one of the metrics the expression reads (le: a histogram's)
        known = SCRAPE_LABELS | {"le"} | set().union(*(exported[n][1] for n in names if n in exported))
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            problems += [
                f"{where}: grouping by {label}, which no metric of it has"
                for label in (part.strip() for part in grouping.split(","))
                if label and label not in known
            ]
    assert not problems, "\n".join(problems)
    # the dashboard covers every stage's metrics (at least one of each family the README lists)
    for prefix in ("inferlog_pipeline_", "inferlog_ingest_", "inferlog_streams_", "inferlog_sink_"):
        assert any(name.startswith(prefix) for name in read), prefix


def test_the_ingest_exports_spool_full_rejections_before_the_first(exported: dict[str, tuple[str, set[str]]]) -> None:
    """InferlogIngestSpoolFull rates this series: it must exist at 0 before the first refusal, or the first
    refusals are the series' first sample and no increase is seen (sinks: test_sinks_framework.py)."""
    assert "inferlog_ingest_rejected_total" in exported
    for reason in ("spool_full", "too_large"):
        assert REGISTRY.get_sample_value("inferlog_ingest_rejected_total", {"reason": reason}) is not None, reason


def test_a_renamed_metric_or_label_is_caught(exported: dict[str, tuple[str, set[str]]]) -> None:
    """The check above has teeth: the helpers find names in the forms the rules use."""
    expr = 'sum by (sink) (rate(inferlog_sink_records_writen_total{sink_kind="s3"}[5m])) / inferlog_sink_lag'
    assert render.metric_names(expr) == {"inferlog_sink_records_writen_total", "inferlog_sink_lag"}
    assert "inferlog_sink_records_writen_total" not in exported
    assert render.selectors(expr) == [("inferlog_sink_records_writen_total", {"sink_kind": ("=", "s3")})]
    # label values and recording rules are not metric names
    assert render.metric_names('inferlog:records:rate15m{stage="inferlog_x"}') == set()


def test_every_alert_is_documented(groups: dict[str, Any]) -> None:
    alerts = [rule for group in groups["groups"] for rule in group["rules"] if "alert" in rule]
    assert {a["alert"] for a in alerts} == {
        "InferlogModelFailureShareHigh",
        "InferlogIngestKafkaDown",
        "InferlogIngestSpoolFilling",
        "InferlogIngestSpoolFull",
        "InferlogSinkLagGrowing",
        "InferlogDeadLetters",
    }
    for alert in alerts:
        name = alert["alert"]
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), f"{name}: no for:"
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        assert "\n" not in annotations["runbook"].strip(), f"{name}: the runbook is one line"
    for rule in (r for group in groups["groups"] for r in group["rules"] if "record" in r):
        assert re.fullmatch(r"inferlog:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_every_alert_is_tested_firing_and_not_firing(groups: dict[str, Any]) -> None:
    tests = yaml.safe_load((MONITORING / "tests" / "alerts.test.yaml").read_text())
    assert tests["rule_files"] == ["rules-for-tests.yaml"]
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            if not check["exp_alerts"]:
                quiet.add(check["alertname"])
            fired |= {(check["alertname"], alert["exp_labels"]["severity"]) for alert in check["exp_alerts"]}
    defined = {
        (rule["alert"], rule["labels"]["severity"])
        for group in groups["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert defined - fired == set(), "alerts no test makes fire"
    assert {name for name, _ in defined} - quiet == set(), "alerts no test checks quiet"


def test_dashboard_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    panels = render.panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["uid"] == "inferlog-pipeline"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "isvc"}
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            used = set(re.findall(r"\$\{?(\w+)", t["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, f"{p['title']}: unknown variables {used - variables}"
    # the per-model panels follow the model selectors
    per_model = [
        t["expr"] for p in panels for t in p.get("targets", []) if "inferlog_pipeline_events_total" in t["expr"]
    ]
    assert any('namespace=~"$namespace"' in e and 'isvc=~"$isvc"' in e for e in per_model)


def test_the_monitoring_kustomization_lists_its_files() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        doc = yaml.safe_load((MONITORING / resource).read_text())
        assert doc["apiVersion"] == "monitoring.coreos.com/v1", resource
    (generated,) = kustomization["configMapGenerator"]
    assert generated["options"]["labels"] == {"grafana_dashboard": "1"}
    assert [(MONITORING / f).exists() for f in generated["files"]] == [True]


def test_render_writes_what_promtool_reads(tmp_path: Path) -> None:
    render.render(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alerts.test.yaml",
        "dashboard-queries.yaml",
        "manifests.yaml",
        "rules-for-tests.yaml",
        "rules.yaml",
    ]
    rules = yaml.safe_load((tmp_path / "rules.yaml").read_text())
    assert rules == {"groups": yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]["groups"]}
    for_tests = yaml.safe_load((tmp_path / "rules-for-tests.yaml").read_text())
    for full, reduced in zip(rules["groups"], for_tests["groups"], strict=True):
        for a, b in zip(full["rules"], reduced["rules"], strict=True):
            assert {k: v for k, v in a.items() if k != "annotations"} == {
                k: v for k, v in b.items() if k != "annotations"
            }
            if "annotations" in a:
                assert b["annotations"] == {"summary": a["annotations"]["summary"]}
    queries = yaml.safe_load((tmp_path / "dashboard-queries.yaml").read_text())["groups"][0]["rules"]
    assert len(queries) == len(render.dashboard_queries(render.dashboard()))
    assert not any("$" in q["expr"] for q in queries), "Grafana variables replaced"


# ------------------------------------------------------------------------------------------------ with promtool


def _go() -> str | None:
    return shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)


def _pinned_version() -> str:
    version = re.search(r"^PROMTOOL_VERSION=(\S+)", CHECK.read_text(), re.M)
    assert version is not None
    return version.group(1)


def _cached_promtool() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferlog" / f"promtool-{_pinned_version()}" / "promtool"


@pytest.fixture(scope="module")
def check_env() -> dict[str, str]:
    """The environment for check.sh: PROMTOOL when given, else the cached build. The tests never build it
    themselves: a cold build takes 8 CPU-minutes (13-16 minutes on a busy 2-core machine), which `make test` (CI)
    should not pay on every new machine; `make monitoring-check` builds it once."""
    env = {"PYTHON": sys.executable}  # render.py needs PyYAML: this interpreter has it
    if os.environ.get("PROMTOOL"):
        env["PROMTOOL"] = os.environ["PROMTOOL"]
    elif not _cached_promtool().exists():
        how = "make monitoring-check" if _go() else "install Go, then make monitoring-check"
        pytest.skip(f"promtool is not built: {how} builds it once into {_cached_promtool().parent}, or set PROMTOOL")
    return env


def _check(env: dict[str, str], tmp: Path, monitoring: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(monitoring / "check.sh")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp,
    )


def test_promtool_checks_and_tests_the_rules(check_env: dict[str, str], tmp_path: Path) -> None:
    proc = _check(check_env, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    go = _go()
    if "PROMTOOL" not in check_env and go is not None:  # the cached binary is the pinned build
        info = subprocess.run(
            [go, "version", "-m", str(_cached_promtool())], capture_output=True, text=True, check=True
        )
        pinned = rf"mod\s+github\.com/prometheus/prometheus\s+{re.escape(_pinned_version())}\s"
        assert re.search(pinned, info.stdout), info.stdout
    # check rules: "SUCCESS: N rules found" for the rule file and for the dashboard's queries
    found = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", out)]
    assert found == [
        len(render.rule_exprs(render.rule_groups(render.prometheus_rule()))),
        len(render.dashboard_queries(render.dashboard())),
    ], out
    assert re.search(r"Processing test file: \./alerts\.test\.yaml\n\s+SUCCESS", out), out
    if _go() is not None:  # crdcheck: both manifests decode into the operator's types
        assert "ok: PrometheusRule" in out and "ok: PodMonitor" in out, out


def test_promtool_test_rules_fails_for_a_rule_changed_against_its_tests(
    check_env: dict[str, str], tmp_path: Path
) -> None:
    """The unit tests decide: with the spool threshold moved from 50% to 70%, the 60% spool no longer fires."""
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy)
    rule = copy / "prometheusrule.yaml"
    threshold = "(inferlog_ingest_spool_capacity_bytes > 0) > 0.5"
    text = rule.read_text()
    assert text.count(threshold) == 1
    rule.write_text(text.replace(threshold, threshold.replace("0.5", "0.7")))
    proc = _check(check_env, tmp_path, copy)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "FAILED" in out and "InferlogIngestSpoolFilling" in out, out


def test_crdcheck_refuses_a_field_the_operator_does_not_know(check_env: dict[str, str], tmp_path: Path) -> None:
    if _go() is None:
        pytest.skip("crdcheck needs a Go toolchain")
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy)
    monitor = copy / "podmonitor.yaml"
    text = monitor.read_text()
    assert "honorLabels: true" in text
    monitor.write_text(text.replace("honorLabels: true", "honor_labels: true", 1))
    proc = _check(check_env, tmp_path, copy)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert 'PodMonitor: json: unknown field "honor_labels"' in out, out
    assert "SUCCESS" in out  # promtool passed before: it is crdcheck that refused
