"""infra/observability/: the alerting rules and the dashboard's queries pass Prometheus's own parsers (Debian's
promtool), name only metrics the code exports, and the local stack's Prometheus configuration is valid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.metric_catalogue import PROMETHEUS_SERIES, exported_series, metric_names

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "infra" / "observability"
RULES = OBSERVABILITY / "rules.yml"
DASHBOARD = OBSERVABILITY / "dashboard.json"
PROMETHEUS_TEMPLATE = OBSERVABILITY / "prometheus.yml.template"
# What Grafana puts in place of its variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: bash infra/local/install.sh installs Debian's prometheus package")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def rule_exprs(rules: dict) -> Iterator[tuple[str, str]]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def dashboard_exprs(dashboard: dict) -> Iterator[tuple[str, str]]:
    def panels(items: list) -> Iterator[dict]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield f"panel {panel['title']!r} query {target['refId']}", expr


def unexported(exprs: Iterator[tuple[str, str]]) -> dict[str, list[str]]:
    """Metric name -> where it is named, for every name the code does not export."""
    known = exported_series() | PROMETHEUS_SERIES
    found: dict[str, list[str]] = {}
    for where, expr in exprs:
        for name in metric_names(expr) - known:
            found.setdefault(name, []).append(where)
    return found


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_promtool_accepts_the_alerting_rules():
    checked = promtool("check", "rules", str(RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_fire_as_their_unit_tests_expect():
    # infra/observability/rules_test.yml: series in, alerts (labels, annotations, timing) out.
    tested = promtool("test", "rules", str(OBSERVABILITY / "rules_test.yml"))

    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_refuses_a_rule_it_cannot_parse(tmp_path):
    broken = RULES.read_text().replace("max(esm_batches_stuck_processing) > 0", "max(esm_batches_stuck_processing > 0")
    (tmp_path / "rules.yml").write_text(broken)

    checked = promtool("check", "rules", str(tmp_path / "rules.yml"))

    assert checked.returncode != 0 and "EsmBatchesStuckProcessing" in checked.stdout + checked.stderr


def test_promtool_accepts_every_dashboard_query(tmp_path):
    # promtool parses PromQL in rules only: each panel query becomes a recording rule.
    queries = list(dashboard_exprs(load_dashboard()))
    rules = [{"record": f"esm_dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    checked = promtool("check", "rules", str(tmp_path / "queries.yml"))

    assert queries and not any("$" in expr for _, expr in queries)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_has_a_prometheus_datasource_variable_and_the_four_rows():
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]

    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row"), (
        "every panel queries the chosen Prometheus"
    )
    for wanted in ("Upload path", "Processing path", "Analytics", "Storage"):
        assert any(row.startswith(wanted) for row in rows), wanted


def test_every_metric_a_rule_or_a_panel_names_is_one_the_code_exports():
    exprs = [*rule_exprs(load_rules()), *dashboard_exprs(load_dashboard())]

    assert unexported(iter(exprs)) == {}
    named = set().union(*(metric_names(expr) for _, expr in exprs))
    assert {"esm_ingest_uploads_total", "esm_bridge_consumer_lag_messages", "esm_process_batches_total"} <= named


def test_a_rule_naming_a_metric_the_code_does_not_export_is_caught():
    rules = load_rules()
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "EsmNoUploadsAccepted")
    rule["expr"] = rule["expr"].replace("esm_ingest_uploads_total", "esm_ingest_upload_total")

    assert unexported(rule_exprs(rules))["esm_ingest_upload_total"] == ["rule EsmNoUploadsAccepted"]


def test_a_histogram_named_without_its_series_suffix_is_caught():
    # A histogram's base name selects nothing: its series are _bucket, _sum and _count.
    assert unexported(iter([("panel", "rate(esm_process_batch_duration_seconds[5m])")])) == {
        "esm_process_batch_duration_seconds": ["panel"]
    }


def render_local_config(rules: Path) -> str:
    """The template with its ports numbered in order and the rules file's path: validity is what is checked here
    (infra/local/stack.sh renders it with the ports of infra/local/local.env)."""
    ports = iter(range(20000, 21000))
    placeholders = set(re.findall(r"@([A-Z_]+)@", PROMETHEUS_TEMPLATE.read_text()))
    values = {name: str(next(ports)) for name in sorted(placeholders) if name.endswith("_PORT")}
    values["RULES"] = str(rules)
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], PROMETHEUS_TEMPLATE.read_text())


def test_the_local_prometheus_configuration_is_valid_with_the_rules(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(render_local_config(RULES))

    checked = promtool("check", "config", str(config))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "rules found" in checked.stdout  # the rule file was checked with it


def test_the_local_prometheus_scrapes_every_function_the_bridge_and_the_collector():
    jobs = {job["job_name"]: job for job in yaml.safe_load(render_local_config(RULES))["scrape_configs"]}
    functions = {main.parent.name for main in (REPO / "functions").glob("*/main.py")}

    assert functions | {"collector", "kafka-bridge"} <= set(jobs)
    # Each on the port infra/local/local.env gives it.
    targets = dict(re.findall(r"job_name: (\S+)\n.*\n.*\[\"(\S+)\"\]", PROMETHEUS_TEMPLATE.read_text()))
    for name in functions | {"collector"}:
        assert targets[name] == f"127.0.0.1:@{name.upper()}_PORT@"
    assert targets["kafka-bridge"] == "127.0.0.1:@KAFKA_BRIDGE_METRICS_PORT@"
