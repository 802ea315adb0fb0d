"""The Prometheus alert rules and the Grafana dashboard query only what the worker exports.

With promtool installed (Debian's ``prometheus`` package), the rules are checked and their unit
tests run, and every dashboard query is parsed as PromQL. Without it, the metric and label
names of every rule and dashboard query are still checked against ``Metrics``' families.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streams.observability.metrics import Metrics
from streams.settings import REPOSITORY_ROOT

RULES = REPOSITORY_ROOT / "deploy" / "prometheus" / "medstream-alerts.yml"
RULE_TESTS = REPOSITORY_ROOT / "deploy" / "prometheus" / "tests" / "medstream-alerts.test.yml"
DASHBOARD = REPOSITORY_ROOT / "deploy" / "grafana" / "medstream-dashboard.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus); "
    "the metric and label name checks of this module still run",
)

# Labels a query may name: Prometheus's own (job, instance, le) and the worker's, none of
# which ever holds patient data (streams/observability/metrics.py).
ALLOWED_LABELS = {
    "job",
    "instance",
    "le",
    "topic",
    "partition",
    "agent",
    "reason",
    "event_type",
    "channel_kind",
    "status",
    "table",
    "result",
}
METRIC_NAME = re.compile(r"\bmedstream_[a-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
TEMPLATE_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}


def exposed_sample_names() -> set[str]:
    """Every sample name the worker's /metrics can show: a counter's ``_total``, a
    histogram's ``_bucket``, ``_sum`` and ``_count``, a gauge's own name."""
    names: set[str] = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every panel target's expression (PromQL with Grafana's variables)."""
    return [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]


def variable_queries(board: dict[str, Any]) -> list[str]:
    """The templating variables' queries (``label_values(...)``, not PromQL)."""
    return [
        variable["definition"]
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]


def label_names(query: str) -> set[str]:
    names: set[str] = set()
    for grouping in GROUPING.findall(query):
        names.update(name.strip() for name in grouping.split(",") if name.strip())
    for selector in SELECTOR.findall(query):
        for matcher in selector.split(","):
            if matcher.strip():
                match = MATCHER.match(matcher)
                assert match is not None, f"unparsed matcher {matcher!r} in {query}"
                names.add(match.group(1))
    return names


def without_grafana_variables(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, query
    return query


def test_the_name_parser_sees_what_prometheus_client_appends() -> None:
    exposed = exposed_sample_names()
    # A counter is exposed with _total, a histogram with _bucket/_sum/_count: never bare.
    assert "medstream_dead_letters_total" in exposed
    assert "medstream_dead_letters" not in exposed
    assert "medstream_state_restored_records_total" in exposed
    assert {"medstream_reminder_lateness_seconds_bucket", "medstream_ready"} <= exposed
    assert "medstream_reminder_lateness_seconds" not in exposed
    assert METRIC_NAME.findall(
        'sum by (job) (rate(medstream_x_bucket{le="1"}[5m])) / medstream_y'
    ) == ["medstream_x_bucket", "medstream_y"]
    assert label_names('sum by (job, le) (m{a="1", b=~"x|y"}) and on (instance) n') == {
        "job",
        "le",
        "a",
        "b",
        "instance",
    }


def test_every_metric_of_the_alert_rules_is_exported_by_the_worker() -> None:
    exposed = exposed_sample_names()
    rules = alert_rules()
    assert len(rules) >= 7
    for rule in rules:
        names = set(METRIC_NAME.findall(rule["expr"]))
        if rule["alert"] == "MedstreamWorkerDown":
            # Prometheus's own `up` of the scrape job: the worker cannot export it.
            assert names == set()
            assert "up{" in rule["expr"]
            continue
        assert names, f"{rule['alert']} queries no medstream metric"
        assert names <= exposed, f"{rule['alert']}: {sorted(names - exposed)} not on /metrics"


def test_the_alert_rules_cover_the_issue_and_name_no_patient_data() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    wanted = {
        "MedstreamConsumerLagGrowing": "medstream_consumer_lag",
        "MedstreamReminderLatenessHigh": "medstream_reminder_lateness_seconds_bucket",
        "MedstreamAgentDown": "medstream_agent_up",
        "MedstreamWorkerNotReady": "medstream_ready",
        "MedstreamDeadLettersRising": "medstream_dead_letters_total",
        "MedstreamDeliveriesFailing": 'medstream_deliveries_total{status="failed"}',
        "MedstreamChangelogRecoverySlow": "medstream_state_restored_records_total",
    }
    for alert, metric in wanted.items():
        assert metric in rules[alert]["expr"], alert
    for alert, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, alert
        assert re.fullmatch(r"\d+m", rule["for"]), alert
        assert label_names(rule["expr"]) <= ALLOWED_LABELS, alert
        for text in rule["annotations"].values():
            assert set(TEMPLATE_LABEL.findall(text)) <= ALLOWED_LABELS, alert


def test_every_family_of_the_worker_has_only_labels_without_patient_data() -> None:
    for family in Metrics().registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, family.name


def test_each_rule_has_a_promtool_test_where_it_fires_and_one_where_it_stays_silent() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        assert test["input_series"], test
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else silent).add(case["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert fires == alerts
    assert silent == alerts


def test_every_metric_of_the_dashboard_is_exported_by_the_worker() -> None:
    exposed = exposed_sample_names()
    board = dashboard()
    queries = dashboard_queries(board) + variable_queries(board)
    used = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert used <= exposed, sorted(used - exposed)
    # What the issue asks the dashboard to show.
    assert {
        "medstream_events_consumed_total",
        "medstream_events_processed_total",
        "medstream_consumer_lag",
        "medstream_dead_letters_total",
        "medstream_deliveries_total",
        "medstream_processing_seconds_bucket",
        "medstream_reminder_lateness_seconds_bucket",
        "medstream_agent_up",
        "medstream_state_restored_records_total",
    } <= used
    for query in queries:
        assert label_names(query) <= ALLOWED_LABELS, query


def test_the_dashboard_uses_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def promtool(*arguments: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    output = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    output = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output
    assert "FAILED" not in output


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    # Recording rules are the one form in which promtool parses arbitrary expressions.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": without_grafana_variables(query)}
                    for n, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    output = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(queries)} rules found" in output
