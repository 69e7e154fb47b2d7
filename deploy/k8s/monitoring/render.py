"""Derive promtool's inputs from the monitoring manifests, so that the PrometheusRule and the dashboard stay the
one source of truth: ``python render.py OUTDIR`` writes

* ``rules.yaml``: the PrometheusRule's ``spec`` as a plain Prometheus rule file (what the operator loads);
* ``rules-for-tests.yaml``: the same rules with only the ``summary`` annotation kept. promtool's unit tests
  compare every annotation verbatim, and the long description and runbook texts would have to be copied into
  each expected alert; the expressions, ``for`` and labels, which decide what fires, are unchanged;
* ``dashboard-queries.yaml``: every query of the Grafana dashboard as a recording rule (Grafana's variables
  replaced by fixed values), so ``promtool check rules`` parses each one as PromQL;
* the promtool unit-test files of ``tests/``, next to the rule file they name;
* ``manifests.yaml``: the kustomization's resources in one stream, for crdcheck (the operator's API types).

check.sh runs it; tests/unit/test_monitoring_rules.py imports it for the expressions.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULE_FILE = HERE / "prometheusrule.yaml"
DASHBOARD_FILE = HERE / "grafana-dashboard.json"
TESTS_DIR = HERE / "tests"

# Grafana's interval variables become a fixed range; a dashboard variable ($namespace) is only ever used inside
# a regex label matcher, where "match anything" is what "All" selects.
_GRAFANA_RANGES = re.compile(r"\$__(?:rate_interval|interval|range)\b|\$\{__(?:rate_interval|interval|range)\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\binferlog_[A-Za-z0-9_]+")
_SELECTOR = re.compile(r"\b(inferlog_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def prometheus_rule(path: Path = RULE_FILE) -> dict[str, Any]:
    doc = load_yaml(path)
    if not isinstance(doc, dict) or doc.get("kind") != "PrometheusRule":
        raise ValueError(f"{path} is not a PrometheusRule")
    return doc


def rule_groups(doc: dict[str, Any]) -> dict[str, Any]:
    """The plain rule file of a PrometheusRule: its spec (``groups:``) as it is."""
    return {"groups": doc["spec"]["groups"]}


def rules_for_tests(groups: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(groups)
    for group in out["groups"]:
        for rule in group["rules"]:
            if "annotations" in rule:
                rule["annotations"] = {k: v for k, v in rule["annotations"].items() if k == "summary"}
    return out


def dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a dashboard")
    return doc


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dash.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and query variable: where is ``panel <id> <refId>``."""
    out: list[tuple[str, str]] = []
    for panel in panels(dash):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['id']} {target['refId']}", target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # label_values(<selector>, label) is Grafana's, not PromQL: its selector is the query to check
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip(), re.S)
            out.append((f"variable {var['name']}", m.group(1) if m else query))
    return out


def promql(grafana_expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so that it is plain PromQL."""
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_RANGES.sub("5m", grafana_expr))


def dashboard_rules(dash: dict[str, Any]) -> dict[str, Any]:
    rules = [
        {"record": "dashboard:" + re.sub(r"\W+", "_", where), "expr": promql(expr)}
        for where, expr in dashboard_queries(dash)
    ]
    return {"groups": [{"name": "dashboard-queries", "rules": rules}]}


def rule_exprs(groups: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule name, expr) of every rule."""
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for group in groups["groups"] for rule in group["rules"]
    ]


def metric_names(expr: str) -> set[str]:
    """The inferlog_* metric names an expression reads (quoted strings, e.g. label values, are not names)."""
    return set(_METRIC.findall(_QUOTED.sub('""', expr)))


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric, {label: (operator, value)}) of every ``inferlog_*{...}`` selector in an expression."""
    out: list[tuple[str, dict[str, tuple[str, str]]]] = []
    for m in _SELECTOR.finditer(expr):
        body, matchers = m.group(2), {}
        pos = 0
        while pos < len(body.strip()):
            mm = _MATCHER.match(body, pos)
            if mm is None:
                raise ValueError(f"cannot read the label matchers {{{body}}} of {m.group(1)}")
            matchers[mm.group(1)] = (mm.group(2), mm.group(3))
            pos = mm.end()
        out.append((m.group(1), matchers))
    return out


def _dump(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))


def render(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    groups = rule_groups(prometheus_rule())
    _dump(outdir / "rules.yaml", groups)
    _dump(outdir / "rules-for-tests.yaml", rules_for_tests(groups))
    _dump(outdir / "dashboard-queries.yaml", dashboard_rules(dashboard()))
    for test in sorted(TESTS_DIR.glob("*.test.yaml")):
        shutil.copyfile(test, outdir / test.name)
    resources = load_yaml(HERE / "kustomization.yaml")["resources"]
    (outdir / "manifests.yaml").write_text("\n---\n".join((HERE / r).read_text() for r in resources))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTDIR")
    render(Path(sys.argv[1]))
